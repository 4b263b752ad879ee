//! Bound parameters as the audit records them: a JSON array an auditor can read and search.
//!
//! - `null` for NULL;
//! - a string with the value's text form, whether the client sent text or binary: binary
//!   values of known types (from the Parse's type list or the server's
//!   ParameterDescription) are rendered as PostgreSQL prints them: integers, floats,
//!   numeric, bool, text-like types, bytea (`\x..`), date, time, timestamp(tz), interval,
//!   uuid, json/jsonb, and arrays of these;
//! - `{"base64": .., "type": oid}` for a binary value the proxy cannot render;
//! - a value longer than the cap keeps its length and a SHA-256 of the whole value as sent,
//!   so it stays matchable: `{"text"|"base64": <first cap bytes>, "bytes": n, "sha256": ..}`.

use std::fmt::Write as _;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::record::push_json_str;
use crate::protocol::frontend::Param;

/// Appends the JSON array of `params`, with `types[i]` the OID of parameter `i` (0 or
/// missing: unknown).
pub fn to_json(params: &[Param<'_>], types: &[u32], cap: usize) -> String {
    let mut b = String::with_capacity(16 + params.len() * 8);
    to_json_into(&mut b, params, types, cap);
    b
}

/// [`to_json`] appended to `b` (a buffer the session reuses).
pub fn to_json_into(b: &mut String, params: &[Param<'_>], types: &[u32], cap: usize) {
    b.push('[');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        let oid = types.get(i).copied().unwrap_or(0);
        match *p {
            Param::Null => b.push_str("null"),
            Param::Text(v) if v.len() > cap => cut(b, v, false, oid, cap),
            Param::Binary(v) if v.len() > cap => cut(b, v, true, oid, cap),
            Param::Text(v) => match std::str::from_utf8(v) {
                Ok(s) => push_json_str(b, s),
                Err(_) => base64(b, v, oid),
            },
            Param::Binary(v) => match render(oid, v) {
                Some(s) => push_json_str(b, &s),
                None => base64(b, v, oid),
            },
        }
    }
    b.push(']');
}

fn base64(b: &mut String, v: &[u8], oid: u32) {
    b.push_str("{\"base64\":\"");
    b.push_str(&base64::engine::general_purpose::STANDARD.encode(v));
    let _ = write!(b, "\",\"type\":{oid}}}");
}

/// A value over the cap: its first `cap` bytes, its length and its hash.
fn cut(b: &mut String, v: &[u8], binary: bool, oid: u32, cap: usize) {
    let head = &v[..cap];
    let text = if binary { None } else { utf8_prefix(head) };
    b.push('{');
    match text {
        Some(t) => {
            b.push_str("\"text\":");
            push_json_str(b, t);
        }
        None => {
            b.push_str("\"base64\":\"");
            b.push_str(&base64::engine::general_purpose::STANDARD.encode(head));
            b.push('"');
        }
    }
    let _ = write!(
        b,
        ",\"bytes\":{},\"sha256\":\"{}\"",
        v.len(),
        hex::encode(Sha256::digest(v))
    );
    if binary {
        let _ = write!(b, ",\"type\":{oid}");
    }
    b.push('}');
}

/// `bytes` as text if it is UTF-8, allowing the cap to have cut a character in two.
fn utf8_prefix(bytes: &[u8]) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(),
        Err(_) => None,
    }
}

/// Type OIDs the proxy renders (pg_type.dat).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;

    /// The element type of an array type.
    pub fn element(array: u32) -> Option<u32> {
        Some(match array {
            1000 => BOOL,
            1001 => BYTEA,
            1002 => CHAR,
            1003 => NAME,
            1005 => INT2,
            1007 => INT4,
            1009 => TEXT,
            1014 => BPCHAR,
            1015 => VARCHAR,
            1016 => INT8,
            1021 => FLOAT4,
            1022 => FLOAT8,
            1028 => OID,
            1115 => TIMESTAMP,
            1182 => DATE,
            1183 => TIME,
            1185 => TIMESTAMPTZ,
            1187 => INTERVAL,
            1231 => NUMERIC,
            199 => JSON,
            143 => XML,
            2951 => UUID,
            3807 => JSONB,
            _ => return None,
        })
    }
}

/// The text form of a binary value of type `oid`, if the proxy knows the type and the
/// value is well formed.
pub fn render(oid: u32, v: &[u8]) -> Option<String> {
    let int = |n: usize| -> Option<i64> {
        (v.len() == n).then(|| {
            let mut x = [0u8; 8];
            x[8 - n..].copy_from_slice(v);
            let raw = i64::from_be_bytes(x);
            // Sign-extend.
            let shift = 64 - 8 * n as u32;
            (raw << shift) >> shift
        })
    };
    match oid {
        oid::BOOL => match v {
            [0] => Some("f".into()),
            [1] => Some("t".into()),
            _ => None,
        },
        oid::INT2 => int(2).map(|n| n.to_string()),
        oid::INT4 => int(4).map(|n| n.to_string()),
        oid::INT8 => int(8).map(|n| n.to_string()),
        oid::OID => int(4).map(|n| (n as u32).to_string()),
        oid::FLOAT4 => {
            (v.len() == 4).then(|| float(f32::from_be_bytes([v[0], v[1], v[2], v[3]]) as f64, true))
        }
        oid::FLOAT8 => {
            let b: [u8; 8] = v.try_into().ok()?;
            Some(float(f64::from_be_bytes(b), false))
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::CHAR | oid::JSON | oid::XML => {
            std::str::from_utf8(v).ok().map(str::to_string)
        }
        oid::JSONB => match v.split_first() {
            Some((1, rest)) => std::str::from_utf8(rest).ok().map(str::to_string),
            _ => None,
        },
        oid::BYTEA => Some(format!("\\x{}", hex::encode(v))),
        oid::UUID => (v.len() == 16).then(|| {
            let h = hex::encode(v);
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }),
        oid::DATE => int(4).and_then(date),
        oid::TIME => int(8).and_then(time_of_day),
        oid::TIMESTAMP => int(8).and_then(|us| timestamp(us, "")),
        oid::TIMESTAMPTZ => int(8).and_then(|us| timestamp(us, "+00")),
        oid::INTERVAL => interval(v),
        oid::NUMERIC => numeric(v),
        array => array_text(oid::element(array)?, v),
    }
}

fn float(x: f64, single: bool) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if single {
        format!("{:?}", x as f32)
    } else {
        format!("{x:?}")
    }
}

const EPOCH_DAYS_FROM_CE: i32 = 730_120; // 2000-01-01 as days from 0001-01-01 (chrono CE)

fn date(days: i64) -> Option<String> {
    match days {
        d if d == i32::MAX as i64 => Some("infinity".into()),
        d if d == i32::MIN as i64 => Some("-infinity".into()),
        d => {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(
                i32::try_from(d).ok()?.checked_add(EPOCH_DAYS_FROM_CE)?,
            )?;
            Some(ymd(date))
        }
    }
}

fn ymd(d: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    if d.year() >= 1 {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        format!("{:04}-{:02}-{:02} BC", 1 - d.year(), d.month(), d.day())
    }
}

fn hms(micros: i64) -> String {
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

fn time_of_day(micros: i64) -> Option<String> {
    (0..=86_400_000_000).contains(&micros).then(|| hms(micros))
}

fn timestamp(micros: i64, zone: &str) -> Option<String> {
    match micros {
        i64::MAX => Some("infinity".into()),
        i64::MIN => Some("-infinity".into()),
        us => {
            let days = us.div_euclid(86_400_000_000);
            let rest = us.rem_euclid(86_400_000_000);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(
                i32::try_from(days).ok()?.checked_add(EPOCH_DAYS_FROM_CE)?,
            )?;
            let d = ymd(date);
            let (day, era) = d.split_at(10);
            Some(format!("{day} {}{zone}{era}", hms(rest)))
        }
    }
}

fn interval(v: &[u8]) -> Option<String> {
    if v.len() != 16 {
        return None;
    }
    let micros = i64::from_be_bytes(v[..8].try_into().ok()?);
    let days = i32::from_be_bytes(v[8..12].try_into().ok()?);
    let months = i32::from_be_bytes(v[12..].try_into().ok()?);
    let mut parts = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(years as i64, "year", "years"));
    }
    if mons != 0 {
        parts.push(unit(mons as i64, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days as i64, "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        parts.push(format!("{sign}{}", hms(micros.checked_abs()?)));
    }
    Some(parts.join(" "))
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(v: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes(
            v.get(2 * i..2 * i + 2)?.try_into().ok()?,
        ))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    if v.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    if digits.iter().any(|&d| d >= 10_000) {
        return None;
    }
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    // Integer part: groups 0..=weight.
    if weight < 0 {
        s.push('0');
    } else {
        for g in 0..=weight {
            let d = digits.get(g as usize).copied().unwrap_or(0);
            if g == 0 {
                let _ = write!(s, "{d}");
            } else {
                let _ = write!(s, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::new();
        let mut g = weight + 1;
        while frac.len() < dscale {
            let d = if g < 0 {
                0
            } else {
                digits.get(g as usize).copied().unwrap_or(0)
            };
            let _ = write!(frac, "{d:04}");
            g += 1;
        }
        s.push_str(&frac[..dscale]);
    }
    Some(s)
}

/// An array in its text form (`{1,2,NULL}`, `{{a,b},{c,d}}`, `{"a b","q\"x"}`).
fn array_text(element: u32, v: &[u8]) -> Option<String> {
    let i32_at = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?))
    };
    let ndim = i32_at(0)?;
    let _has_nulls = i32_at(4)?;
    if i32_at(8)? as u32 != element || !(0..=6).contains(&ndim) {
        return None;
    }
    let mut dims = Vec::new();
    let mut at = 12;
    for _ in 0..ndim {
        dims.push(usize::try_from(i32_at(at)?).ok()?);
        at += 8; // length and lower bound
    }
    if ndim == 0 {
        return (at == v.len()).then(|| "{}".into());
    }
    let total: usize = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let mut items = Vec::with_capacity(total.min(1 << 16));
    for _ in 0..total {
        let len = i32_at(at)?;
        at += 4;
        if len < 0 {
            items.push(None);
        } else {
            let len = len as usize;
            let raw = v.get(at..at + len)?;
            at += len;
            items.push(Some(render(element, raw)?));
        }
    }
    if at != v.len() {
        return None;
    }
    let mut out = String::new();
    nest(&mut out, &dims, &items, &mut 0);
    Some(out)
}

fn nest(out: &mut String, dims: &[usize], items: &[Option<String>], next: &mut usize) {
    out.push('{');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(',');
        }
        if dims.len() > 1 {
            nest(out, &dims[1..], items, next);
        } else {
            match &items[*next] {
                None => out.push_str("NULL"),
                Some(s) => quote_element(out, s),
            }
            *next += 1;
        }
    }
    out.push('}');
}

fn quote_element(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s.eq_ignore_ascii_case("null")
        && !s.bytes().any(|b| {
            matches!(b, b'{' | b'}' | b',' | b'"' | b'\\') || super::super::sql::lexer::is_space(b)
        });
    if plain {
        out.push_str(s);
    } else {
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(params: &[Param<'_>], types: &[u32], cap: usize) -> serde_json::Value {
        serde_json::from_str(&to_json(params, types, cap)).unwrap()
    }

    #[test]
    fn text_and_binary_values_read_as_text() {
        let v = json(
            &[
                Param::Text(b"42"),
                Param::Null,
                Param::Binary(&[0, 0, 0, 42]),
                Param::Binary(b"CNGGZ"),
                Param::Binary(&[1]),
                Param::Binary(&[0xff, 0xfe]),
            ],
            &[0, 0, oid::INT4, oid::VARCHAR, oid::BOOL, 0],
            1024,
        );
        assert_eq!(v[0], "42");
        assert!(v[1].is_null());
        assert_eq!(v[2], "42");
        assert_eq!(v[3], "CNGGZ");
        assert_eq!(v[4], "t");
        assert_eq!(v[5]["base64"], "//4=");
        assert_eq!(v[5]["type"], 0);
    }

    #[test]
    fn values_over_the_cap_keep_length_and_hash() {
        let big = vec![b'a'; 100];
        let v = json(
            &[Param::Text(&big), Param::Binary(&big)],
            &[0, oid::BYTEA],
            10,
        );
        assert_eq!(v[0]["text"], "aaaaaaaaaa");
        assert_eq!(v[0]["bytes"], 100);
        assert_eq!(v[0]["sha256"], hex::encode(Sha256::digest(&big)));
        assert_eq!(v[1]["bytes"], 100);
        assert_eq!(v[1]["type"], oid::BYTEA);
    }

    #[test]
    fn renders_dates_times_numbers_and_arrays() {
        assert_eq!(
            render(oid::DATE, &(-1i32).to_be_bytes()).unwrap(),
            "1999-12-31"
        );
        assert_eq!(
            render(oid::DATE, &(366i32).to_be_bytes()).unwrap(),
            "2001-01-01"
        );
        assert_eq!(
            render(oid::TIMESTAMP, &(1_500_000i64).to_be_bytes()).unwrap(),
            "2000-01-01 00:00:01.5"
        );
        assert_eq!(
            render(oid::TIMESTAMPTZ, &(86_400_000_000i64).to_be_bytes()).unwrap(),
            "2000-01-02 00:00:00+00"
        );
        assert_eq!(render(oid::FLOAT8, &0.1f64.to_be_bytes()).unwrap(), "0.1");
        assert_eq!(render(oid::INT2, &(-2i16).to_be_bytes()).unwrap(), "-2");
        // 1154.3333 = digits [1154, 3333], weight 0, dscale 4.
        let mut n = Vec::new();
        for w in [2u16, 0, 0x4000, 4, 1154, 3333] {
            n.extend(w.to_be_bytes());
        }
        assert_eq!(render(oid::NUMERIC, &n).unwrap(), "-1154.3333");
        let mut n = Vec::new();
        for w in [1u16, (-1i16) as u16, 0, 6, 5] {
            n.extend(w.to_be_bytes());
        }
        assert_eq!(render(oid::NUMERIC, &n).unwrap(), "0.000500");
        let mut iv = Vec::new();
        iv.extend(3_723_000_000i64.to_be_bytes());
        iv.extend(3i32.to_be_bytes());
        iv.extend(14i32.to_be_bytes());
        assert_eq!(
            render(oid::INTERVAL, &iv).unwrap(),
            "1 year 2 mons 3 days 01:02:03"
        );
        // text[] {"a b",NULL,x}
        let mut a = Vec::new();
        for x in [1i32, 1, oid::TEXT as i32, 3, 1] {
            a.extend(x.to_be_bytes());
        }
        for item in [Some(&b"a b"[..]), None, Some(b"x")] {
            match item {
                Some(v) => {
                    a.extend((v.len() as i32).to_be_bytes());
                    a.extend(v);
                }
                None => a.extend((-1i32).to_be_bytes()),
            }
        }
        assert_eq!(render(1009, &a).unwrap(), "{\"a b\",NULL,x}");
        let uuid = [0x12u8; 16];
        assert_eq!(
            render(oid::UUID, &uuid).unwrap(),
            "12121212-1212-1212-1212-121212121212"
        );
        assert_eq!(render(oid::JSONB, b"\x01{\"a\":1}").unwrap(), "{\"a\":1}");
        assert!(render(oid::INT4, &[1, 2]).is_none(), "wrong length");
    }
}
