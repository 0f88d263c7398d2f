//! The guest-operation requests and replies: `StartProgramInGuest` and `ListProcessesInGuest`
//! bodies (elements in XSD order), the quoting of a hook's argv into vSphere's single
//! `arguments` string, and the reading of `GuestProcessInfo`.
//!
//! **Quoting.** `GuestProgramSpec.arguments` is one string, and on Linux (and Solaris)
//! guests VMware Tools runs `programPath arguments` through a guest shell (`/bin/bash`). So
//! each argument is quoted for a POSIX shell: left as it is when it is not empty and holds
//! only `A-Z a-z 0-9 @ % + = : , . / _ -`, otherwise wrapped in single quotes, an embedded
//! `'` written `'\''` (close the quote, an escaped quote, reopen). Inside single quotes a
//! POSIX shell interprets nothing (no `$`, no backquotes, no globbing, no `\`), so the
//! program gets exactly the argv it was given. Windows guests parse command lines by other
//! rules: this quoting is for Linux guests.

use secrecy::ExposeSecret;
use virtrigaud_core::shutdown::HookOutput;

use crate::config::GuestCredentials;
use crate::types::MoRef;
use crate::xml::{Element, Xml};

/// Whether `c` needs no quoting for a POSIX shell.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c)
}

/// One argument quoted for a POSIX shell (see the module docs).
pub(crate) fn posix_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_owned();
    }
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// The `arguments` string of `args`: each one quoted, separated by one space.
pub(crate) fn posix_arguments(args: &[String]) -> String {
    args.iter()
        .map(|a| posix_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Refuses what cannot reach the guest intact: control characters other than tab and newline
/// (XML 1.0 cannot carry most of them, and a carriage return would be normalised away), and
/// in the program path the characters a shell still interprets inside double quotes (Tools
/// quotes the path that way): `"`, `$` and `` ` ``.
pub(crate) fn validate(program: &str, args: &[String]) -> Result<(), String> {
    let bad = |c: char| c.is_control() && c != '\t' && c != '\n';
    if program.is_empty() {
        return Err("preStop.exec.command: the program path is empty".into());
    }
    if program
        .chars()
        .any(|c| bad(c) || c == '\n' || matches!(c, '"' | '$' | '`'))
    {
        return Err(format!(
            "preStop.exec.command: the program path {program:?} holds a control character, \
             '\"', '$' or '`' (vSphere hands it to a guest shell)"
        ));
    }
    if let Some(i) = args.iter().position(|a| a.chars().any(bad)) {
        return Err(format!(
            "preStop.exec.command[{}]: a control character other than tab or newline",
            i + 1
        ));
    }
    Ok(())
}

/// `<auth xsi:type="NamePasswordAuthentication">`: the one place the guest password is
/// written (into a request body; bodies are never logged).
fn auth(x: &mut Xml, creds: &GuestCredentials) {
    x.open_typed("auth", "NamePasswordAuthentication")
        .el("interactiveSession", "false")
        .el("username", &creds.username)
        .el("password", creds.password.expose_secret())
        .close("auth");
}

/// The body of `GuestProcessManager.StartProgramInGuest(vm, auth, spec)`.
pub(crate) fn start_program_body(
    vm: &MoRef,
    creds: &GuestCredentials,
    program: &str,
    args: &[String],
) -> String {
    let mut x = Xml::new();
    x.moref("vm", &vm.ty, &vm.value);
    auth(&mut x, creds);
    x.open_typed("spec", "GuestProgramSpec")
        .el("programPath", program)
        .el("arguments", &posix_arguments(args))
        .close("spec");
    x.finish()
}

/// The body of `GuestProcessManager.ListProcessesInGuest(vm, auth, pids=[pid])`.
pub(crate) fn list_processes_body(vm: &MoRef, creds: &GuestCredentials, pid: i64) -> String {
    let mut x = Xml::new();
    x.moref("vm", &vm.ty, &vm.value);
    auth(&mut x, creds);
    x.el("pids", &pid.to_string());
    x.finish()
}

/// The pid (`xsd:long`) a `StartProgramInGuestResponse` returns.
pub(crate) fn started_pid(resp: &Element) -> Option<i64> {
    resp.text_at("returnval")?.parse().ok()
}

/// What a `ListProcessesInGuestResponse` says of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProcessState {
    /// Listed without an `endTime`.
    Running,
    /// Listed with an `endTime`: how it ended (vSphere returns no output).
    Exited(HookOutput),
    /// Not listed (vSphere forgets an exited program after about five minutes; a guest
    /// reboot forgets them all).
    Gone,
}

/// Reads the `GuestProcessInfo` of `pid`. An `exitCode` absent beside an `endTime` is read
/// as 0: the element is optional, and govmomi (vcsim and govc) leaves a zero out.
pub(crate) fn process_state(resp: &Element, pid: i64) -> ProcessState {
    let Some(info) = resp
        .children_named("returnval")
        .find(|p| p.text_at("pid").and_then(|s| s.parse().ok()) == Some(pid))
    else {
        return ProcessState::Gone;
    };
    match info.text_at("endTime") {
        None | Some("") => ProcessState::Running,
        Some(_) => {
            let code = info
                .text_at("exitCode")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            ProcessState::Exited(HookOutput::exited(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_are_single_quoted_for_a_posix_shell() {
        assert_eq!(posix_arguments(&[]), "");
        assert_eq!(
            posix_arguments(&args(&["-c", "/var/lib/app", "a=b,c:d@e%f+g"])),
            "-c /var/lib/app a=b,c:d@e%f+g"
        );
        assert_eq!(
            posix_arguments(&args(&["", "two words", "it's", "$HOME `id` *;|&>"])),
            r#"'' 'two words' 'it'\''s' '$HOME `id` *;|&>'"#
        );
        assert_eq!(posix_quote("'"), r#"''\'''"#);
        assert_eq!(posix_quote("a\\b\nc"), "'a\\b\nc'");
        assert_eq!(posix_quote("~root"), "'~root'");
    }

    #[test]
    fn unsendable_program_paths_and_arguments_are_refused() {
        assert!(validate("/bin/sh", &args(&["-c", "echo\tx\ny"])).is_ok());
        assert!(validate("", &[]).is_err());
        for p in ["/bin/$x", "/bin/\"sh", "/bin/`x`", "/bin/sh\n"] {
            assert!(validate(p, &[]).is_err(), "{p:?}");
        }
        let e = validate("/bin/sh", &args(&["-c", "a\rb"])).expect_err("CR");
        assert!(e.contains("command[2]"), "{e}");
        assert!(validate("/bin/sh", &args(&["\u{0}"])).is_err());
    }

    #[test]
    fn bodies_follow_the_xsd_order() {
        let creds = GuestCredentials::new("root", "pw<&>");
        let body = start_program_body(&MoRef::vm("vm-87"), &creds, "/usr/bin/env", &args(&["a b"]));
        assert_eq!(
            body,
            concat!(
                r#"<vm type="VirtualMachine">vm-87</vm>"#,
                r#"<auth xsi:type="NamePasswordAuthentication"><interactiveSession>false</interactiveSession>"#,
                r#"<username>root</username><password>pw&lt;&amp;&gt;</password></auth>"#,
                r#"<spec xsi:type="GuestProgramSpec"><programPath>/usr/bin/env</programPath>"#,
                r#"<arguments>&apos;a b&apos;</arguments></spec>"#
            )
        );
        let body = list_processes_body(&MoRef::vm("vm-87"), &creds, 4242);
        assert!(body.ends_with("</auth><pids>4242</pids>"), "{body}");
    }

    #[test]
    fn process_infos_are_read() {
        let reply = |inner: &str| {
            xml::parse(&format!(
                r#"<ListProcessesInGuestResponse xmlns="urn:vim25">{inner}</ListProcessesInGuestResponse>"#
            ))
            .expect("xml")
        };
        let running = reply(
            "<returnval><name>sh</name><pid>7</pid><owner>root</owner><cmdLine>sh</cmdLine><startTime>2024-05-01T10:00:00Z</startTime></returnval>",
        );
        assert_eq!(process_state(&running, 7), ProcessState::Running);
        assert_eq!(process_state(&running, 8), ProcessState::Gone);
        let done = reply(
            "<returnval><pid>7</pid><startTime>2024-05-01T10:00:00Z</startTime><endTime>2024-05-01T10:00:02Z</endTime><exitCode>3</exitCode></returnval>",
        );
        assert_eq!(
            process_state(&done, 7),
            ProcessState::Exited(HookOutput::exited(3))
        );
        let zero_left_out =
            reply("<returnval><pid>7</pid><endTime>2024-05-01T10:00:02Z</endTime></returnval>");
        assert_eq!(
            process_state(&zero_left_out, 7),
            ProcessState::Exited(HookOutput::exited(0))
        );
        assert_eq!(process_state(&reply(""), 7), ProcessState::Gone);
        let started = xml::parse(
            r#"<StartProgramInGuestResponse xmlns="urn:vim25"><returnval>4242</returnval></StartProgramInGuestResponse>"#,
        )
        .expect("xml");
        assert_eq!(started_pid(&started), Some(4242));
    }
}
