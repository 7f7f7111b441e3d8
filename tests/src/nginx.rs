//! A real nginx in front of several signal servers, as `deploy/nginx-upstream.conf` puts
//! it: WebSocket upgrade on `/ws`, the rest proxied, the next server tried when one does
//! not answer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, http_get, Guard};

/// A running nginx and the address it listens on.
pub struct Nginx {
    pub addr: String,
    _process: Guard,
}

/// One signal server behind it.
pub struct Upstream<'a> {
    pub addr: &'a str,
    /// Used only while every other server is down (nginx's `backup`), so a test knows
    /// where a connection lands.
    pub backup: bool,
}

impl Nginx {
    /// Starts nginx on 127.0.0.1 in front of `upstreams`, its files and logs in `dir`;
    /// returns once it answers.
    pub fn start(dir: &Path, upstreams: &[Upstream]) -> Nginx {
        let root = dir.join("nginx");
        std::fs::create_dir_all(root.join("logs")).expect("can create nginx's folder");
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|u| {
                let backup = if u.backup { " backup" } else { "" };
                // A refused connection marks a server down for 2 s, then it is tried again.
                format!(
                    "        server {} max_fails=1 fail_timeout=2s{backup};\n",
                    u.addr
                )
            })
            .collect();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream signal {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location /ws {{
            proxy_pass http://signal;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 120s;
        }}
        location / {{
            proxy_pass http://signal;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("can write nginx.conf");
        // Debian puts it in /usr/sbin, which is not on every user's PATH.
        let program = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(program)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(root.join("logs").join("stderr.log"))
                    .expect("can create nginx's stderr log"),
            )
            .spawn()
            .expect("nginx runs (scripts/setup installs nginx-light)");
        let nginx = Nginx {
            addr: format!("127.0.0.1:{port}"),
            _process: Guard(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !http_get(&nginx.addr, "/healthz").contains("200 OK") {
            assert!(
                Instant::now() < deadline,
                "nginx did not answer within 10 s; see {}/logs",
                root.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}
