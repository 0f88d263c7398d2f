//! `Debug` output that never shows a secret: cloud-init user data (which routinely carries
//! passwords, keys and tokens) is shown by its size only.

use std::fmt;

/// Shows optional text as `None` or `Some(<N bytes>)`, never the text itself.
pub(crate) struct Redacted<'a>(pub(crate) Option<&'a str>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(s) => write!(f, "Some(<{} bytes>)", s.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn shows_the_size_never_the_text() {
        assert_eq!(format!("{:?}", Redacted(None)), "None");
        assert_eq!(
            format!("{:?}", Redacted(Some("password: hunter2"))),
            "Some(<17 bytes>)"
        );
    }
}
