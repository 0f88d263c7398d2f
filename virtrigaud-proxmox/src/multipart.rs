//! The `multipart/form-data` framing of an upload (RFC 7578), built by hand so the body has
//! a known length: the text fields and the file part's headers go before the file's bytes
//! ([`Frame::head`]), the closing delimiter after them ([`Frame::tail`]). The file itself is
//! streamed between the two and never held in memory.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The form field that carries the file (PVE's `filename` parameter names the file part,
/// as PVE's own web UI sends it).
pub(crate) const FILE_FIELD: &str = "filename";

/// The bytes around an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The boundary (without the leading `--`).
    pub(crate) boundary: String,
    /// Text fields, then the file part's headers (up to the blank line before the data).
    pub(crate) head: Vec<u8>,
    /// The end of the file part and the closing delimiter.
    pub(crate) tail: Vec<u8>,
}

/// A boundary unlikely to occur in any file: 32 random hex digits (from std's randomly
/// seeded hasher and a process-wide counter) after a fixed prefix.
pub(crate) fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u64(n);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(n ^ u64::from(std::process::id()));
    format!("virtrigaud-{:016x}{:016x}", a.finish(), b.finish())
}

/// Whether `s` can stand inside a quoted header parameter or a field without breaking the
/// framing (no quote, backslash or control character).
fn header_safe(s: &str) -> bool {
    !s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

impl Frame {
    /// The frame for `fields` (name, value) and a file part named [`FILE_FIELD`] with
    /// `filename`. Refuses names or values that would break the framing.
    pub(crate) fn new(
        boundary: String,
        fields: &[(&str, &str)],
        filename: &str,
    ) -> Result<Self, String> {
        let delimiter = format!("--{boundary}");
        let mut head = String::new();
        for (name, value) in fields {
            if !header_safe(name) || value.contains(&delimiter) || value.contains(['\r', '\n']) {
                return Err(format!(
                    "upload field {name:?} cannot be sent as a form field"
                ));
            }
            head.push_str(&format!(
                "{delimiter}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        if filename.is_empty() || !header_safe(filename) {
            return Err(format!("upload file name {filename:?} cannot be sent"));
        }
        head.push_str(&format!(
            "{delimiter}\r\nContent-Disposition: form-data; name=\"{FILE_FIELD}\"; \
             filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = format!("\r\n{delimiter}--\r\n");
        Ok(Frame {
            boundary,
            head: head.into_bytes(),
            tail: tail.into_bytes(),
        })
    }

    /// The request's `Content-Type`.
    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length around a file of `file_len` bytes.
    pub(crate) fn content_length(&self, file_len: u64) -> u64 {
        self.head.len() as u64 + file_len + self.tail.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fields_and_the_file_part() {
        let f = Frame::new("B0".into(), &[("content", "iso")], "base.iso")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&f.head),
            "--B0\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n\
             --B0\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"base.iso\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        assert_eq!(f.tail, b"\r\n--B0--\r\n");
        assert_eq!(f.content_type(), "multipart/form-data; boundary=B0");
        let mut body = f.head.clone();
        body.extend_from_slice(b"DATA");
        body.extend_from_slice(&f.tail);
        assert_eq!(f.content_length(4), body.len() as u64);
    }

    /// The whole body, split the way a multipart parser does, gives back the fields and the
    /// exact file bytes (also bytes that look like CRLFs and dashes).
    #[test]
    fn a_parser_reads_back_the_exact_bytes() {
        let data: Vec<u8> = b"\r\n--\r\n\r\nx\0\xff--".to_vec();
        let f = Frame::new(boundary(), &[("content", "vztmpl")], "t.tar.zst")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut body = f.head.clone();
        body.extend_from_slice(&data);
        body.extend_from_slice(&f.tail);
        let delim = format!("--{}", f.boundary).into_bytes();
        let mut parts = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = rest
            .windows(delim.len())
            .position(|w| w == delim.as_slice())
        {
            parts.push(&rest[..i]);
            rest = &rest[i + delim.len()..];
        }
        assert_eq!(rest, b"--\r\n", "closing delimiter");
        assert_eq!(parts.len(), 3, "preamble + two parts");
        assert!(parts[0].is_empty());
        let part = |p: &[u8]| {
            let p = &p[2..p.len() - 2];
            let i = p.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            (
                String::from_utf8_lossy(&p[..i]).into_owned(),
                p[i + 4..].to_vec(),
            )
        };
        let (h1, v1) = part(parts[1]);
        assert!(h1.contains("name=\"content\""), "{h1}");
        assert_eq!(v1, b"vztmpl");
        let (h2, v2) = part(parts[2]);
        assert!(h2.contains("filename=\"t.tar.zst\""), "{h2}");
        assert_eq!(v2, data);
    }

    #[test]
    fn refuses_what_would_break_the_framing() {
        assert!(Frame::new("B".into(), &[], "a\"b.iso").is_err());
        assert!(Frame::new("B".into(), &[], "a\r\nb.iso").is_err());
        assert!(Frame::new("B".into(), &[], "").is_err());
        assert!(Frame::new("B".into(), &[("content", "iso\r\n--B")], "a.iso").is_err());
        assert!(Frame::new("B".into(), &[("na\"me", "x")], "a.iso").is_err());
    }

    #[test]
    fn boundaries_differ() {
        let (a, b) = (boundary(), boundary());
        assert_ne!(a, b);
        assert!(a.len() > 40 && a.is_ascii(), "{a}");
    }
}
