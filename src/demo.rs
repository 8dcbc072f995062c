//! `weir demo`: a small lab of network namespaces with a realistic traffic mix (web, DNS, a
//! bulk transfer, a port scan, dropped connections), an agent capturing in them and its UI.
//! Everything it creates is removed on exit, Ctrl-C included.

use crate::agent::AgentArgs;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address of the UI and API.
    #[arg(long, default_value = "127.0.0.1:9977")]
    listen: SocketAddr,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::units::duration)]
    duration: Option<Duration>,
}

/// The lab's subnet (198.18.0.0/15 is reserved for benchmarking: never routed anywhere).
const NET: &str = "198.18.100";

/// (role, host number): each role is a namespace joined to a bridge in the hub namespace.
const ROLES: &[(&str, u8)] = &[
    ("client", 100),
    ("web", 10),
    ("dns", 53),
    ("bulk", 20),
    ("scan", 66),
];

/// What the demo created; dropping it removes all of it.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    data: PathBuf,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    fn ip(&self, args: &str) -> Result<()> {
        run("ip", &args.split_whitespace().collect::<Vec<_>>())
    }

    /// A background process inside a namespace, killed when the lab goes.
    fn spawn(&mut self, role: &str, script: &str) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting traffic in {role}"))?;
        self.children.push(child);
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let hub = self.ns("hub");
        self.ip(&format!("netns add {hub}"))?;
        self.namespaces.push(hub.clone());
        self.ip(&format!("-n {hub} link add br0 type bridge"))?;
        self.ip(&format!("-n {hub} link set br0 up"))?;
        for (role, host) in ROLES {
            let ns = self.ns(role);
            self.ip(&format!("netns add {ns}"))?;
            self.namespaces.push(ns.clone());
            let peer = format!("{}h{role}", self.prefix);
            self.ip(&format!(
                "link add eth0 netns {ns} type veth peer name {peer} netns {hub}"
            ))?;
            self.ip(&format!("-n {hub} link set {peer} master br0 up"))?;
            self.ip(&format!("-n {ns} addr add {NET}.{host}/24 dev eth0"))?;
            self.ip(&format!("-n {ns} link set eth0 up"))?;
            self.ip(&format!("-n {ns} link set lo up"))?;
        }
        Ok(())
    }

    fn traffic(&mut self) -> Result<()> {
        let www = self.data.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), "<h1>demo</h1>\n".repeat(200))?;
        std::fs::write(www.join("big.bin"), vec![7u8; 2_000_000])?;
        // Web server; port 8443 is dropped by a firewall rule (connections that never open).
        self.spawn(
            "web",
            &format!(
                "cd {} && exec python3 -m http.server 80 --bind {NET}.10",
                www.display()
            ),
        )?;
        let nft = format!(
            "ip netns exec {} nft 'add table inet demo; add chain inet demo input {{ type filter hook input priority 0; }}; add rule inet demo input tcp dport 8443 drop'",
            self.ns("web")
        );
        let _ = run("sh", &["-c", &nft]);
        // A DNS responder: NXDOMAIN for names starting with "nope", else NOERROR (the query
        // echoed back as the answer, with no records).
        self.spawn(
            "dns",
            &format!(
                "exec python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{NET}.53',53))\nwhile True:\n d,a=s.recvfrom(512)\n rc=3 if b'nope' in d else 0\n s.sendto(d[:2]+bytes([0x81,0x80|rc])+d[4:],a)\""
            ),
        )?;
        self.spawn("bulk", "exec iperf3 -s -B 198.18.100.20")?;
        // The client: pages, lookups, a big download, a dropped port, and a bulk transfer.
        self.spawn(
            "client",
            &format!(
                "while true; do \
                   curl -s -o /dev/null http://{NET}.10/index.html; \
                   python3 -c \"import socket,random\nfor n in ['web','api','nope']:\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.2)\n q=random.randbytes(2)+bytes([1,0,0,1,0,0,0,0,0,0,len(n)])+n.encode()+bytes([4])+b'demo'+bytes([0,0,1,0,1])\n s.sendto(q,('{NET}.53',53))\n try: s.recv(512)\n except Exception: pass\"; \
                   curl -s -o /dev/null http://{NET}.10/big.bin; \
                   curl -s -o /dev/null --max-time 1 http://{NET}.10:8443/ ; \
                   sleep 1; \
                 done"
            ),
        )?;
        self.spawn(
            "client",
            "while true; do iperf3 -c 198.18.100.20 -t 3 -b 50M >/dev/null 2>&1; sleep 7; done",
        )?;
        // A port scan of the web server, every 20 s.
        self.spawn(
            "scan",
            &format!(
                "while true; do python3 -c \"import socket\nfor p in range(1,300):\n s=socket.socket(); s.settimeout(0.02)\n try: s.connect(('{NET}.10',p))\n except Exception: pass\n s.close()\"; sleep 20; done"
            ),
        )?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes started by the shells above die with their namespace's last user; kill
        // whatever still runs inside before deleting the namespaces.
        for ns in &self.namespaces {
            let _ = Command::new("sh")
                .args(["-c", &format!("ip netns pids {ns} | xargs -r kill -9")])
                .status();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.data);
        eprintln!("weir demo: removed its namespaces and data");
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    agent: AgentArgs,
}

pub fn run_demo(a: DemoArgs) -> Result<()> {
    for tool in ["ip", "python3", "curl", "iperf3"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("weir demo needs {tool} (apt-get install iproute2 python3 curl iperf3)");
        }
    }
    let id = std::process::id() % 100_000;
    let mut lab = Lab {
        prefix: format!("wd{id}-"),
        namespaces: Vec::new(),
        children: Vec::new(),
        data: std::env::temp_dir().join(format!("weir-demo-{id}")),
    };
    std::fs::create_dir_all(&lab.data)?;
    lab.build()
        .context("building the demo namespaces (needs root)")?;
    lab.traffic()?;
    let mut argv: Vec<String> = vec![
        "agent".into(),
        "--no-host-netns".into(),
        "--active-timeout".into(),
        "2s".into(),
        "--data-dir".into(),
        lab.data.join("store").display().to_string(),
        "--listen".into(),
        a.listen.to_string(),
    ];
    for (role, _) in ROLES {
        argv.push("--netns".into());
        argv.push(lab.ns(role));
    }
    let agent = AgentCli::try_parse_from(argv)
        .context("agent arguments")?
        .agent;
    if let Some(d) = a.duration {
        std::thread::spawn(move || {
            std::thread::sleep(d);
            // SAFETY: sends SIGTERM to this process, which the agent handles as a clean stop.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        });
    }
    eprintln!(
        "weir demo: web, DNS, bulk, scan and dropped traffic in namespaces {}*\n  open http://{}/ (views fill within a minute); Ctrl-C stops and removes everything",
        lab.prefix, a.listen
    );
    let result = crate::agent::run(agent);
    drop(lab);
    result
}
