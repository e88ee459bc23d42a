//! Where each path of a YAML document (`steps[2].with.phone`) starts, so
//! that problems found after parsing still point at a line and column.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (1-based) of every path in a document. The document is
/// read for them only when a problem needs placing, so valid files cost
/// one parse, not two.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    text: String,
    map: std::sync::OnceLock<HashMap<String, (usize, usize)>>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Collector {
    stack: Vec<Frame>,
    out: HashMap<String, (usize, usize)>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Collector {
    /// The path of the node that starts now, or None when it is a map key.
    fn node_path(&mut self, ev: &Event, mark: Marker) -> Option<String> {
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    if let Event::Scalar(k, ..) = ev {
                        let p = join(path, k);
                        self.out.insert(p, pos);
                        *key = Some(k.clone());
                    } else {
                        *key = Some(String::from("?"));
                    }
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.out.entry(p.clone()).or_insert(pos);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.node_path(&ev, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.node_path(&ev, mark) {
                    self.stack.push(Frame::Map { path, key: None });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.node_path(&ev, mark) {
                    self.stack.push(Frame::Seq { path, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Positions {
    /// Reads the positions of a document; a document that does not parse
    /// has none (its syntax error is reported by the parser).
    pub fn parse(text: &str) -> Self {
        Positions {
            text: text.to_owned(),
            map: std::sync::OnceLock::new(),
        }
    }

    fn map(&self) -> &HashMap<String, (usize, usize)> {
        self.map.get_or_init(|| {
            let mut c = Collector {
                stack: Vec::new(),
                out: HashMap::new(),
            };
            let mut parser = Parser::new_from_str(&self.text);
            match parser.load(&mut c, false) {
                Ok(()) => c.out,
                Err(_) => HashMap::new(),
            }
        })
    }

    /// The line and column of a path, or of its nearest parent that has one.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map().get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_list_items() {
        let text = "name: x\nsteps:\n  - id: a\n    read: a.csv\n  - id: b\n    with:\n      phone: 1\n";
        let p = Positions::parse(text);
        assert_eq!(p.find("name"), Some((1, 1)));
        assert_eq!(p.find("steps[1]"), Some((5, 7)));
        assert_eq!(p.find("steps[1].with.phone"), Some((7, 7)));
        assert_eq!(p.find("steps[0].read"), Some((4, 5)));
        assert_eq!(p.find("steps[1].nothing"), Some((5, 7)));
    }
}
