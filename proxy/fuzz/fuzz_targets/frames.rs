//! Fuzzes everything the proxy decodes from the network: the frame splitter, every client
//! message decoder, the start-up packet, the server messages, the SQL lexer, splitter,
//! redactor and inspector that run on client text, the parameter renderer, and the pairing
//! ledger fed the same frames as client messages and as server messages. None may panic
//! (a ledger may refuse, never crash), and the splitter must never claim more bytes than it
//! was given.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proxy::protocol::{backend, frame, frontend, startup};
use proxy::relay::ledger::Ledger;
use proxy::sql::{self, Caller, Mode};

/// Types the renderer knows, and one it does not.
const TYPES: [u32; 12] = [16, 17, 20, 21, 23, 25, 700, 701, 1082, 1114, 1700, 1007];

fuzz_target!(|data: &[u8]| {
    let _ = startup::decode(data);
    let mut client = Ledger::new(Caller::Person, 16, b'I');
    let mut server = Ledger::new(Caller::Service, 16, b'I');
    let now = Instant::now();
    let mut rest = data;
    while let Ok(Some(h)) = frame::header(rest, 1 << 20) {
        assert!(h.total >= frame::HEADER_LEN);
        let Ok(Some((_, body))) = frame::complete(rest, 1 << 20) else { break };
        assert_eq!(body.len(), h.body_len());
        // The ledger: whatever it decides, it decides without panicking.
        let _ = client.client(h.tag, body, now);
        client.commit(1);
        let _ = server.client(h.tag, body, now);
        server.commit(1);
        let _ = server.server(h.tag, body, now, &mut |_| {});
        let _ = server.due_refusals();
        match h.tag {
            frontend::QUERY => {
                if let Ok(text) = frontend::query(body) {
                    let seen = sql::inspect(text, Caller::Person);
                    for r in &seen.statements {
                        assert!(seen.text.get(r.clone()).is_some());
                    }
                    for mode in [Mode::PINNED, Mode::BACKSLASH_ESCAPES] {
                        let mut at = 0;
                        for t in sql::lexer::Lexer::new(text, mode) {
                            assert_eq!(t.start, at);
                            assert!(text.is_char_boundary(t.end));
                            at = t.end;
                        }
                        assert_eq!(at, text.len());
                    }
                }
            }
            frontend::BIND => {
                if let Ok(b) = frontend::bind(body) {
                    let types: Vec<u32> = (0..b.params.len())
                        .map(|i| TYPES[(i + body.len()) % TYPES.len()])
                        .collect();
                    let json = proxy::audit::params::to_json(&b.params, &types, 16);
                    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
                }
            }
            // 'C' is Close from a client and CommandComplete from a server.
            frontend::CLOSE | frontend::DESCRIBE => {
                let _ = frontend::target(body, "Close");
                if let Ok(tag) = backend::command_tag(body) {
                    let _ = backend::tag_rows(tag);
                }
            }
            _ => {}
        }
        rest = &rest[h.total..];
    }
    let mut unknown = 0;
    server.abort(now, &mut |_| unknown += 1);
});
