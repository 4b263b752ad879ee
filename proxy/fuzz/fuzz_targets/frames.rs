//! Fuzzes everything the proxy decodes from the network: the frame splitter, every client
//! message decoder, the start-up packet, the server messages that carry outcomes, and the
//! SQL splitter and redactor that run on client text. None may panic, and the splitter must
//! never claim more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::protocol::{backend, frame, frontend, startup};

fuzz_target!(|data: &[u8]| {
    let _ = startup::decode(data);
    let mut rest = data;
    while let Ok(Some(h)) = frame::header(rest, 1 << 20) {
        assert!(h.total >= frame::HEADER_LEN);
        let Ok(Some((_, body))) = frame::complete(rest, 1 << 20) else { break };
        assert_eq!(body.len(), h.body_len());
        match h.tag {
            frontend::QUERY => {
                if let Ok(sql) = frontend::query(body) {
                    for stmt in proxy::sql::split(sql) {
                        assert!(sql.contains(stmt));
                        let _ = proxy::sql::redact(stmt);
                    }
                }
            }
            frontend::PARSE => {
                let _ = frontend::parse(body);
            }
            frontend::BIND => {
                if let Ok(b) = frontend::bind(body) {
                    let _ = proxy::audit::record::params_json(&b.params, 16);
                }
            }
            frontend::EXECUTE => {
                let _ = frontend::execute(body);
            }
            // 'C' is Close from a client and CommandComplete from a server.
            frontend::CLOSE | frontend::DESCRIBE => {
                let _ = frontend::target(body, "Close");
                if let Ok(tag) = backend::command_tag(body) {
                    let _ = backend::tag_rows(tag);
                }
            }
            backend::ERROR_RESPONSE => {
                let _ = backend::error_fields(body);
            }
            backend::READY_FOR_QUERY => {
                let _ = backend::ready_status(body);
            }
            _ => {}
        }
        rest = &rest[h.total..];
    }
});
