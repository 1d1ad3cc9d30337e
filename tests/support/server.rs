//! Running `opal serve` for a test and talking HTTP to it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

/// An `opal serve` process on a free port; stopped (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the server can still write to its stdout.
    _stdout: BufReader<std::process::ChildStdout>,
    /// What the server logged to stderr so far (also passed on to the test's stderr).
    log: Arc<Mutex<String>>,
    pub address: String,
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Starts `opal serve --config <config>` on an ephemeral port and waits until it listens.
    pub fn start(config: &Path) -> Server {
        Self::start_in(Path::new("."), config)
    }

    /// [`Server::start`] in the working directory `dir`, against which a relative `config`
    /// resolves.
    pub fn start_in(dir: &Path, config: &Path) -> Server {
        Self::start_with(dir, config, "127.0.0.1:0", &[], &[])
    }

    /// [`Server::start`] with `--watch-config`: changes of the deployment file are applied.
    pub fn start_watching_config(config: &Path) -> Server {
        Self::start_with(
            Path::new("."),
            config,
            "127.0.0.1:0",
            &[],
            &["--watch-config"],
        )
    }

    /// [`Server::start`] listening on `listen` (an ephemeral port of every interface with
    /// `0.0.0.0:0`), with `env` added to the server's environment.
    pub fn start_listening(config: &Path, listen: &str, env: &[(&str, &str)]) -> Server {
        Self::start_with(Path::new("."), config, listen, env, &[])
    }

    fn start_with(
        dir: &Path,
        config: &Path,
        listen: &str,
        env: &[(&str, &str)],
        arguments: &[&str],
    ) -> Server {
        let mut child = Command::new(crate::opal_binary())
            .current_dir(dir)
            .args(["serve", "--listen", listen, "--config"])
            .arg(config)
            .args(arguments)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("opal serve starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout
            .read_line(&mut line)
            .expect("opal serve prints its address");
        let address = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|_| line.contains("http://"))
            .unwrap_or_else(|| panic!("opal serve did not start: '{line}'"))
            .to_owned();
        Server {
            child,
            _stdout: stdout,
            log,
            address,
        }
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Reply {
        request(&self.address, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(&self.address, "POST", path, headers, body)
    }

    /// The version of the loaded plugin `name`, from `GET /v2/plugins`.
    pub fn plugin_version(&self, name: &str) -> String {
        let plugins = self.get("/v2/plugins").json();
        plugins
            .as_array()
            .expect("/v2/plugins lists plugins")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["version"].as_str())
            .unwrap_or_else(|| panic!("plugin '{name}' is not listed"))
            .to_owned()
    }

    /// Whether the server still answers its liveness probe.
    pub fn is_live(&self) -> bool {
        self.get("/v2/health/live").status == 200
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("the server exits")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream =
        TcpStream::connect(address).unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP response from {address}{path}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}
