//! Arbitrary bytes as a message on the scale-out events stream (anyone who may publish to
//! the broker can send one): `export::wire::Envelope::decode` must refuse or decode, never
//! panic or allocate without bound; what decodes must encode again and decode to the same
//! envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldtap::export::wire::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        let again = e.encode().expect("a decoded envelope encodes");
        let back = Envelope::decode(&again).expect("and decodes again");
        assert_eq!(back.batch, e.batch);
        assert_eq!(back.msgs.len(), e.msgs.len());
    }
});
