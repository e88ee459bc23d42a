//! The providers a run can use: the bundled descriptors, embedded in the
//! binary so flow works from any folder, plus the user's own from
//! `--providers DIR` or `FLOW_PROVIDERS_PATH`, which add to or replace them.

use super::{parse_descriptor, Descriptor};
use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use indexmap::IndexMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The bundled descriptors: name and YAML text.
pub const BUNDLED: &[(&str, &str)] = &[
    ("eyenewton", include_str!("../../../providers/eyenewton.yaml")),
    ("neiros", include_str!("../../../providers/neiros.yaml")),
    ("pozvonim", include_str!("../../../providers/pozvonim.yaml")),
    ("roistat", include_str!("../../../providers/roistat.yaml")),
    ("solos", include_str!("../../../providers/solos.yaml")),
];

/// Where a provider came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Built into the binary.
    Bundled,
    /// A user file.
    File(PathBuf),
}

/// Known providers by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    providers: IndexMap<String, Slot>,
}

/// A provider: parsed, or (bundled ones) parsed when first asked for, so
/// that a run pays only for the providers it uses.
#[derive(Debug, Clone)]
struct Slot {
    descriptor: std::sync::OnceLock<Option<Arc<Descriptor>>>,
    bundled: Option<&'static str>,
    origin: Origin,
}

impl Slot {
    fn parsed(d: Descriptor, origin: Origin) -> Self {
        Slot {
            descriptor: std::sync::OnceLock::from(Some(Arc::new(d))),
            bundled: None,
            origin,
        }
    }

    fn get(&self, name: &str) -> Option<&Arc<Descriptor>> {
        self.descriptor
            .get_or_init(|| {
                let text = self.bundled?;
                let file = PathBuf::from(format!("providers/{name}.yaml"));
                // The tests parse every bundled descriptor; this cannot fail
                // in a release, and a failure would show as an unknown provider.
                parse_descriptor(&file, text).ok().map(Arc::new)
            })
            .as_ref()
    }
}

impl Registry {
    /// The bundled providers, then every `*.yaml`/`*.yml` in `dirs`.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, Diagnostics> {
        let mut r = Registry::default();
        let mut diags = Diagnostics::default();
        for (name, text) in BUNDLED {
            r.providers.insert(
                (*name).to_owned(),
                Slot {
                    descriptor: std::sync::OnceLock::new(),
                    bundled: Some(text),
                    origin: Origin::Bundled,
                },
            );
        }
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                Diagnostics::from(Diagnostic::new(dir, format!("cannot read the providers folder: {e}")))
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            // Within one folder a name is one file's: a later folder may
            // replace an earlier one's (or a bundled) provider, but two files
            // of one folder naming the same provider is a mistake.
            let mut here: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
            for file in files {
                match super::load_descriptor(&file) {
                    Ok(d) => {
                        if let Some(other) = here.insert(d.name.clone(), file.clone()) {
                            diags.0.push(
                                Diagnostic::new(
                                    &file,
                                    format!(
                                        "`{}` is also the name of {}: one would hide the other",
                                        d.name,
                                        other.display()
                                    ),
                                )
                                .hint("give each provider its own `name:`, or remove one of the files"),
                            );
                            continue;
                        }
                        r.providers.insert(d.name.clone(), Slot::parsed(d, Origin::File(file)));
                    }
                    Err(d) => diags.0.extend(d.0),
                }
            }
        }
        if diags.is_empty() {
            Ok(r)
        } else {
            Err(diags)
        }
    }

    /// The folders named by `FLOW_PROVIDERS_PATH` (separated like `PATH`).
    pub fn dirs_from_env() -> Vec<PathBuf> {
        std::env::var_os("FLOW_PROVIDERS_PATH")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default()
    }

    /// A provider by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Descriptor>> {
        self.providers.get(name).and_then(|slot| slot.get(name))
    }

    /// A provider by name, or an error that suggests the closest.
    pub fn require(&self, name: &str) -> Result<&Arc<Descriptor>, String> {
        self.get(name).ok_or_else(|| {
            let mut msg = format!("there is no provider `{name}`");
            if let Some(s) = did_you_mean(name, self.providers.keys().map(String::as_str)) {
                msg.push_str(&format!("; did you mean `{s}`?"));
            } else {
                msg.push_str(&format!("; the providers are: {}", self.names().join(", ")));
            }
            msg
        })
    }

    /// Every provider's name.
    pub fn names(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// Every provider with where it came from.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Descriptor>, &Origin)> {
        self.providers
            .iter()
            .filter_map(|(name, slot)| slot.get(name).map(|d| (d, &slot.origin)))
    }

    /// Adds a provider (tests, or descriptors given on the command line).
    pub fn insert(&mut self, d: Descriptor, origin: Origin) {
        self.providers.insert(d.name.clone(), Slot::parsed(d, origin));
    }
}

impl Origin {
    /// Where it came from, for people.
    pub fn describe(&self) -> String {
        match self {
            Origin::Bundled => "bundled".into(),
            Origin::File(p) => p.display().to_string(),
        }
    }
}
