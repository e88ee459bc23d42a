//! Real HTTP servers on 127.0.0.1 for the tests, each on its own thread and
//! runtime so the `flow` binary under test talks to them over loopback.
#![allow(dead_code)]

use std::net::SocketAddr;

/// Serves a router on a free port until the test process ends. Handlers
/// may read the peer's address (`ConnectInfo<SocketAddr>`).
pub fn serve(router: axum::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.expect("serve");
        });
    });
    addr
}

/// A server that answers every request with a response cut off in the
/// middle, and counts the connections.
pub fn broken(count: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"data\": [",
            );
            let _ = s.flush();
            drop(s);
        }
    });
    addr
}
