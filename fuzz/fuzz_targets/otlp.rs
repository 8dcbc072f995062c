//! OTLP/HTTP bodies (traces and logs; protobuf and JSON; gzip): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::telemetry::{Encoding, TelemetryCodec};
use weir_otlp::Otlp;

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::Protobuf, Encoding::Json] {
        let _ = Otlp.spans(data, enc);
        let _ = Otlp.logs(data, enc);
    }
    if let Ok(body) = weir_otlp::decompress(data, Some("gzip"), 1 << 20) {
        assert!(body.len() <= 1 << 20);
        let _ = Otlp.spans(&body, Encoding::Protobuf);
    }
});
