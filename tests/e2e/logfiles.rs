//! Log files the agent follows (`--log-file`): a syslog text file in the three line shapes,
//! appended to, rotated the way logrotate does it; and a real systemd journal file written by
//! systemd's own `systemd-journal-remote` (no journald runs on the test machines), appended
//! to. Every line becomes one `log` record with its time, severity, program, host and file,
//! lines older than the first read's hour are left out, a restart records nothing twice, and
//! the Timeline's logs lane shows them.

use crate::util::{Agent, label, now_ms, require};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const JOURNAL_REMOTE: &str = "/usr/lib/systemd/systemd-journal-remote";

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("write");
}

/// Appends one entry (journal export format) to the journal file, through systemd's code.
fn journal_entry(journal: &Path, at_ms: u64, priority: u8, ident: &str, message: &str, seq: u64) {
    let export = journal.with_extension(format!("{seq}.export"));
    std::fs::write(
        &export,
        format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             MESSAGE={message}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER={ident}\n_PID=4242\n\
             _HOSTNAME=node-j\n_SYSTEMD_UNIT={ident}.service\n\n",
            at_ms * 1000,
            seq * 1_000_000
        ),
    )
    .expect("export");
    let out = std::process::Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", journal.display()))
        .arg(&export)
        .output()
        .expect("systemd-journal-remote");
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn logs(a: &Agent, source: &str) -> Vec<Value> {
    a.records("log")
        .into_iter()
        .filter(|r| r["source"] == source)
        .collect()
}

fn texts(a: &Agent, source: &str) -> Vec<String> {
    let mut t: Vec<String> = logs(a, source)
        .iter()
        .filter_map(|r| r["text"].as_str().map(str::to_string))
        .collect();
    t.sort();
    t
}

fn wait_for(a: &Agent, source: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = texts(a, source);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{source}: {got:?}, expected {want:?}\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn iso(ms: u64) -> String {
    crate::util::sh(&format!(
        "date -u -d @{} +%Y-%m-%dT%H:%M:%S.%3NZ",
        ms as f64 / 1000.0
    ))
    .trim()
    .to_string()
}

fn rfc3164(ms: u64) -> String {
    crate::util::sh(&format!("date -u -d @{} '+%b %e %H:%M:%S'", ms / 1000))
        .trim_end()
        .to_string()
}

#[test]
fn syslog_files_and_journals_are_followed_into_log_records() {
    require(&[JOURNAL_REMOTE, "journalctl", "date"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let syslog = dir.path().join("syslog");
    let journal = dir.path().join("app.journal");
    let now = now_ms();
    let (t1, t2, t3) = (now - 300_000, now - 240_000, now - 180_000);
    // An old line (two hours ago: before the first read's hour), then one line of each shape.
    append(
        &syslog,
        &format!(
            "<11>1 {} node-s old 1 - - too old\n\
             <11>{} node-s shop[42]: payment backend unreachable\n\
             <165>1 {} node-s api 7 ID47 [origin ip=\"10.0.0.1\"] slow upstream\n\
             {} node-s db[9]: checkpoint done\n",
            iso(now - 7_200_000),
            rfc3164(t1),
            iso(t2),
            iso(t3)
        ),
    );
    journal_entry(
        &journal,
        now - 200_000,
        2,
        "billing",
        "ledger write failed",
        1,
    );
    let mut a = Agent::start(
        dir.path(),
        &[
            "--no-capture",
            "--log-file",
            syslog.to_str().expect("p"),
            "--log-file",
            journal.to_str().expect("p"),
        ],
    );
    wait_for(
        &a,
        "syslog",
        &[
            "checkpoint done",
            "payment backend unreachable",
            "slow upstream",
        ],
    );
    wait_for(&a, "journald", &["ledger write failed"]);
    let s = logs(&a, "syslog");
    let pay = s
        .iter()
        .find(|r| r["text"] == "payment backend unreachable")
        .expect("pay");
    assert_eq!(pay["time_ms"].as_u64(), Some(t1 / 1000 * 1000), "{pay}");
    assert_eq!(label(pay, "severity"), Some("error"), "{pay}");
    assert_eq!(label(pay, "service"), Some("shop"), "{pay}");
    assert_eq!(label(pay, "host.name"), Some("node-s"), "{pay}");
    assert_eq!(label(pay, "process.pid"), Some("42"), "{pay}");
    assert_eq!(label(pay, "log.file.path"), syslog.to_str(), "{pay}");
    let api = s
        .iter()
        .find(|r| r["text"] == "slow upstream")
        .expect("api");
    assert_eq!(api["time_ms"].as_u64(), Some(t2), "{api}");
    assert_eq!(label(api, "severity"), Some("info"), "{api}");
    let j = &logs(&a, "journald")[0];
    assert_eq!(j["time_ms"].as_u64(), Some(now - 200_000), "{j}");
    assert_eq!(label(j, "severity"), Some("error"), "{j}");
    assert_eq!(label(j, "service"), Some("billing"), "{j}");
    assert_eq!(label(j, "systemd.unit"), Some("billing.service"), "{j}");

    // More lines; then the syslog rotated (renamed to .1 after a last line, a new file).
    append(
        &syslog,
        &format!("<12>{} node-s shop[42]: retrying\n", rfc3164(now)),
    );
    journal_entry(&journal, now - 1000, 6, "billing", "ledger caught up", 2);
    wait_for(&a, "journald", &["ledger caught up", "ledger write failed"]);
    append(
        &syslog,
        &format!(
            "<14>{} node-s shop[42]: last of the old file\n",
            rfc3164(now)
        ),
    );
    std::fs::rename(&syslog, dir.path().join("syslog.1")).expect("rotate");
    append(
        &syslog,
        &format!(
            "<14>{} node-s shop[42]: first of the new file\n",
            rfc3164(now)
        ),
    );
    let all = [
        "checkpoint done",
        "first of the new file",
        "last of the old file",
        "payment backend unreachable",
        "retrying",
        "slow upstream",
    ];
    wait_for(&a, "syslog", &all);

    // A restart resumes: nothing twice, and what comes next is kept.
    a.stop();
    a.spawn();
    append(
        &syslog,
        &format!("<14>{} node-s shop[42]: after restart\n", rfc3164(now_ms())),
    );
    let mut more = all.to_vec();
    more.insert(0, "after restart");
    wait_for(&a, "syslog", &more);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        texts(&a, "syslog").len(),
        more.len(),
        "recorded twice after a restart"
    );
    assert_eq!(
        texts(&a, "journald").len(),
        2,
        "journal recorded twice after a restart"
    );

    // The Timeline's logs lane has them all, by severity.
    let t = a.ok("/api/v1/timeline", &[("from", "-1h"), ("max_items", "100")]);
    let lane = t["lanes"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["id"] == "logs"))
        .cloned()
        .expect("logs lane");
    assert_eq!(
        lane["total"].as_u64(),
        Some(more.len() as u64 + 2),
        "{lane}"
    );
}
