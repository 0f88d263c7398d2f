//! A tiny template renderer for the report's prose (`benches/templates/*.md`).
//!
//! A template file is Markdown cut into named blocks: a line `<!-- block: NAME -->` starts block
//! NAME, which runs verbatim up to the next such line (its last line break included). In a
//! block, `{name}` (lower-case letters, digits, `_`) is a placeholder, filled from the values
//! given to [`Template::fill`]; any other brace is literal text. A missing block or value is a
//! harness bug and panics (the report's golden tests render every block).

use std::fmt::Display;

/// One template file, embedded with `include_str!`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Template {
    name: &'static str,
    text: &'static str,
}

/// A template's values: `(placeholder, value)`.
pub(crate) type Vars<'a> = [(&'a str, &'a dyn Display)];

const MARK: &str = "<!-- block: ";

impl Template {
    /// The template `name` (for messages) with text `text`.
    pub(crate) const fn new(name: &'static str, text: &'static str) -> Self {
        Template { name, text }
    }

    /// The raw text of block `block`.
    pub(crate) fn block(&self, block: &str) -> &'static str {
        let mut rest = self.text;
        while let Some(at) = rest.find(MARK) {
            let after = &rest[at + MARK.len()..];
            let (head, body) = after.split_once('\n').unwrap_or((after, ""));
            let end = body.find(MARK).unwrap_or(body.len());
            if head.trim_end().trim_end_matches("-->").trim() == block {
                return &body[..end];
            }
            rest = &body[end..];
        }
        panic!("template {}: no block {block:?}", self.name)
    }

    /// Block `block` as a phrase to splice into a line: its text without the final line break.
    pub(crate) fn phrase(&self, block: &str) -> &'static str {
        let b = self.block(block);
        b.strip_suffix('\n').unwrap_or(b)
    }

    /// Block `block` with its placeholders filled from `vars`.
    pub(crate) fn fill(&self, block: &str, vars: &Vars<'_>) -> String {
        fill(self.block(block), vars).unwrap_or_else(|missing| {
            panic!("template {}/{block}: no value for {{{missing}}}", self.name)
        })
    }
}

impl Template {
    /// [`Template::fill`] as a phrase (without the block's final line break).
    pub(crate) fn fill_phrase(&self, block: &str, vars: &Vars<'_>) -> String {
        let mut s = self.fill(block, vars);
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }
}

/// `text` with every `{name}` replaced by its value; `Err(name)` for a placeholder without one.
pub(crate) fn fill(text: &str, vars: &Vars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with('}') {
            let name = &after[..len];
            let (_, value) = vars
                .iter()
                .find(|(k, _)| *k == name)
                .ok_or_else(|| name.to_string())?;
            out.push_str(&value.to_string());
            rest = &after[len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Template = Template::new(
        "t",
        "intro\n<!-- block: a -->\n\n## {title}\n{n} × {n}, {\"json\": 1}\n<!-- block: b -->\nlast",
    );

    #[test]
    fn template_blocks_are_verbatim_up_to_the_next_marker() {
        assert_eq!(T.block("a"), "\n## {title}\n{n} × {n}, {\"json\": 1}\n");
        assert_eq!(T.block("b"), "last");
    }

    #[test]
    fn template_fills_placeholders_and_keeps_other_braces() {
        let s = T.fill("a", &[("title", &"Fleet"), ("n", &3)]);
        assert_eq!(s, "\n## Fleet\n3 × 3, {\"json\": 1}\n");
        assert_eq!(fill("{x", &[]), Ok("{x".to_string()));
        assert_eq!(fill("{missing}", &[]), Err("missing".to_string()));
    }

    #[test]
    #[should_panic(expected = "no block")]
    fn template_missing_block_panics() {
        let _ = T.block("zzz");
    }
}
