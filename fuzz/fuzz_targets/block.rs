//! The store's block decoder over bytes read back from disk: never panics; a block that
//! decodes encodes again (as the store writes them: split where needed) and decodes to the
//! same flows (`decode(encode(x)) == x`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_core::store::codec::{decode_block, encode_blocks};

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = decode_block(data) {
        let refs: Vec<(u64, &weir_core::Flow)> = items.iter().map(|(s, f)| (*s, f)).collect();
        let mut again = Vec::new();
        for (_, bytes) in encode_blocks(&refs).expect("decoded flows encode") {
            again.extend(decode_block(&bytes).expect("an encoded block decodes"));
        }
        assert_eq!(again, items);
    }
});
