//! `http://...` / `https://...`: one POST per payload, with the sender's media type as
//! `Content-Type` (an exporter's `[exporter] media_type`, `application/x-ndjson` by default);
//! anything but a 2xx answer is a failed send (the exporter retries it), its error
//! holding the first 600 characters of the answer's body on one line. Redirects are not
//! followed: the operator named this URL. Given `http+gzip://` or `https+gzip://`, each body is
//! gzip-compressed (fastest level) and sent with `Content-Encoding: gzip`.

use std::time::Duration;
use weir_core::sink::{SinkError, Transport};

pub struct Http {
    name: String,
    url: String,
    gzip: bool,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(name: String, url: &str, gzip: bool) -> Http {
        Http {
            name,
            url: url.to_string(),
            gzip,
            agent: ureq::Agent::config_builder()
                .max_redirects(0)
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }
}

impl Transport for Http {
    fn send(&self, payload: &[u8], media_type: &str, timeout: Duration) -> Result<(), SinkError> {
        let fail = |message: String| SinkError::Send {
            name: self.name.clone(),
            message,
        };
        let url = weir_core::sink::redact(&self.url);
        let req = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout.max(Duration::from_millis(1))))
            .build()
            .header("content-type", media_type);
        let mut resp = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(payload.len() / 4),
                flate2::Compression::fast(),
            );
            std::io::Write::write_all(&mut gz, payload)
                .and_then(|()| gz.finish())
                .map_err(|e| fail(format!("compressing for {url}: {e}")))
                .and_then(|body| {
                    req.header("content-encoding", "gzip")
                        .send(&body[..])
                        .map_err(|e| fail(format!("POST {url}: {e}")))
                })?
        } else {
            req.send(payload)
                .map_err(|e| fail(format!("POST {url}: {e}")))?
        };
        let status = resp.status().as_u16();
        if (200..=299).contains(&status) {
            return Ok(());
        }
        // What the destination said, on one line (ClickHouse names the refused column or row).
        let mut head = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(resp.body_mut().as_reader(), 64 << 10),
            &mut head,
        );
        let said: String = String::from_utf8_lossy(&head)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(600)
            .collect();
        let message = if said.is_empty() {
            format!("POST {url}: answered {status}")
        } else {
            format!("POST {url}: answered {status}: {said}")
        };
        match status {
            // 408 and 429 say "later"; other 4xx refuse this payload for good.
            400..=499 if status != 408 && status != 429 => Err(SinkError::Rejected {
                name: self.name.clone(),
                message,
            }),
            _ => Err(fail(message)),
        }
    }
}
