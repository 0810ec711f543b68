//! A TCP proxy in front of one node: the link to it can be cut (open connections are closed, new
//! ones are accepted but never answered, as when packets are dropped) and restored.

use std::io::copy;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards connections on a free port to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (cut_flag, stop_flag, streams) = (cut.clone(), stop.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                if cut_flag.load(Ordering::Relaxed) {
                    // Held, never answered: the peer waits for its own timeout.
                    streams.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for s in [&client, &server] {
                    if let Ok(clone) = s.try_clone() {
                        streams.lock().unwrap().push(clone);
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Proxy {
            port,
            cut,
            stop,
            open,
            thread: Some(thread),
        }
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user=postgres",
            self.port
        )
    }

    /// Closes every open connection and leaves new ones unanswered.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        self.close_open();
    }

    /// Forwards new connections again (connections held while cut are closed).
    pub fn restore(&self) {
        self.close_open();
        self.cut.store(false, Ordering::Relaxed);
    }

    fn close_open(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    if let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) {
        std::thread::spawn(move || {
            let _ = copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close_open();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
