//! A TCP proxy in front of each node, with a rule per calling node: pass, blackhole (connections
//! are accepted and never answered), drop (closed at once) or delay. The caller is known from the
//! PostgreSQL startup packet: pg_paxos connects with `application_name = 'pg_paxos/<node id>'`;
//! anything else is a client. Changing a rule cuts that caller's open connections, as a real
//! partition would. [`LinkProxy::frozen`] stands for a member that never answers anyone.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What happens to a caller's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Pass,
    Blackhole,
    Drop,
    Delay(Duration),
}

#[derive(Default)]
struct State {
    rules: HashMap<String, Rule>,
    /// The rule of callers without one of their own (`Pass` unless frozen).
    otherwise: Option<Rule>,
    /// Open connections: id, caller, and a handle of each socket (removed when they close).
    open: Vec<(u64, String, TcpStream)>,
    next_id: u64,
}

/// The proxy in front of one node.
pub struct LinkProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const SSL_REQUEST: i32 = 80877103;
const GSS_REQUEST: i32 = 80877104;

/// Reads the startup packet (answering SSL and GSS requests with "no"); returns its bytes and
/// the caller's node id (`client` for anything not pg_paxos).
fn read_startup(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, String)> {
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len);
        if !(8..=10_000).contains(&n) {
            return Err(std::io::Error::other("bad startup packet"));
        }
        let mut body = vec![0u8; n as usize - 4];
        stream.read_exact(&mut body)?;
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if code == SSL_REQUEST || code == GSS_REQUEST {
            stream.write_all(b"N")?;
            continue;
        }
        let fields: Vec<&[u8]> = body[4..].split(|b| *b == 0).collect();
        let mut caller = "client".to_string();
        for pair in fields.chunks(2) {
            if let [b"application_name", value] = pair {
                if let Some(id) = String::from_utf8_lossy(value).strip_prefix("pg_paxos/") {
                    caller = id.to_string();
                }
            }
        }
        let mut packet = len.to_vec();
        packet.extend_from_slice(&body);
        return Ok((packet, caller));
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Option<Duration>,
    shared: Arc<Mutex<State>>,
    id: u64,
) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
        shared.lock().unwrap().open.retain(|(i, _, _)| *i != id);
    });
}

impl LinkProxy {
    /// Forwards connections on a free port to 127.0.0.1:`target`.
    /// A member that is frozen, or whose links swallow every packet: connections are accepted
    /// and never answered.
    pub fn frozen() -> LinkProxy {
        let proxy = LinkProxy::start(0);
        proxy.state.lock().unwrap().otherwise = Some(Rule::Blackhole);
        proxy
    }

    pub fn start(target: u16) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let shared = shared.clone();
                std::thread::spawn(move || Self::serve(client, target, shared));
            }
        });
        LinkProxy {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(mut client: TcpStream, target: u16, shared: Arc<Mutex<State>>) {
        let _ = client.set_nonblocking(false);
        let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok((startup, caller)) = read_startup(&mut client) else {
            return;
        };
        let _ = client.set_read_timeout(None);
        let rule = {
            let state = shared.lock().unwrap();
            let otherwise = state.otherwise.unwrap_or(Rule::Pass);
            state.rules.get(&caller).copied().unwrap_or(otherwise)
        };
        match rule {
            Rule::Drop => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Rule::Blackhole => {
                // Held, never answered, until the rule changes.
                let mut state = shared.lock().unwrap();
                state.next_id += 1;
                let id = state.next_id;
                if let Ok(clone) = client.try_clone() {
                    state.open.push((id, caller, clone));
                }
                return;
            }
            Rule::Pass | Rule::Delay(_) => {}
        }
        let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
            return;
        };
        if server.write_all(&startup).is_err() {
            return;
        }
        let id = {
            let mut state = shared.lock().unwrap();
            state.next_id += 1;
            let id = state.next_id;
            for s in [&client, &server] {
                if let Ok(clone) = s.try_clone() {
                    state.open.push((id, caller.clone(), clone));
                }
            }
            id
        };
        let delay = match rule {
            Rule::Delay(d) => Some(d),
            _ => None,
        };
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            pipe(c, s, delay, shared.clone(), id);
            pipe(server, client, delay, shared, id);
        }
    }

    /// Sets the rule for connections from `caller` (a node id, or `client`) and cuts that
    /// caller's open connections.
    pub fn set(&self, caller: &str, rule: Rule) {
        let mut state = self.state.lock().unwrap();
        state.rules.insert(caller.to_string(), rule);
        state.open.retain(|(_, c, stream)| {
            if c == caller {
                let _ = stream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Every caller passes again (open connections are cut).
    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.rules.clear();
        for (_, _, stream) in state.open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user=postgres",
            self.port
        )
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.heal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
