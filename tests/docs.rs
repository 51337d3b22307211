//! The documentation is checked against the code: the man page names every
//! option that `sockhold --help` shows (and documents no option that does
//! not exist), it lints clean, and the exit status tables of the man page
//! and the README list exactly the statuses of `src/error.rs`. And `--help`
//! fits: 80 columns when piped, the terminal's width (up to 100) on one.

use crate::harness::{cannot_run, sockhold_bin};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The man page as a reader sees its words: roff's font changes (`\fB`,
/// `\f[I]`) and zero-width escapes (`\&`, `\c`) dropped, and every other
/// backslash removed, so that `\fB\-\-listen\fP` reads `--listen`.
fn man_page() -> String {
    roff_to_text(&read("man/sockhold.1"))
}

fn roff_to_text(roff: &str) -> String {
    let mut text = String::with_capacity(roff.len());
    let mut chars = roff.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            // \fB, \f(BI, \f[BI]
            Some('f') => match chars.next() {
                Some('[') => {
                    chars.by_ref().find(|&c| c == ']');
                }
                Some('(') => {
                    chars.next();
                    chars.next();
                }
                _ => {}
            },
            Some('&' | 'c') | None => {}
            Some(other) => text.push(other),
        }
    }
    text
}

fn is_option_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// Every `--name` in `text`, as whole tokens (`--ready` is not found
/// inside `--ready-timeout`).
fn long_options(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("--") {
        let after = &rest[start + 2..];
        let name_len = after.find(|c| !is_option_char(c)).unwrap_or(after.len());
        let name = &after[..name_len];
        if name.starts_with(|c: char| c.is_ascii_alphanumeric()) && !name.ends_with('-') {
            found.insert(format!("--{name}"));
        }
        rest = &after[name_len..];
    }
    found
}

fn help_text() -> String {
    let output = Command::new(sockhold_bin())
        .arg("--help")
        .output()
        .expect("run sockhold --help");
    assert!(output.status.success(), "sockhold --help failed");
    String::from_utf8(output.stdout).expect("--help is UTF-8")
}

/// The lines of one `.SH` section of the man page (backslashes removed).
fn man_section(page: &str, title: &str) -> Vec<String> {
    let mut lines = page.lines().skip_while(|line| {
        !(line.starts_with(".SH") && line[3..].trim().trim_matches('"') == title)
    });
    assert!(
        lines.next().is_some(),
        "the man page has no section {title}"
    );
    lines
        .take_while(|line| !line.starts_with(".SH"))
        .map(str::to_owned)
        .collect()
}

/// The heading lines of the `.TP` entries in a section.
fn tagged_paragraph_headings(section: &[String]) -> Vec<&str> {
    section
        .windows(2)
        .filter(|pair| pair[0].starts_with(".TP"))
        .map(|pair| pair[1].as_str())
        .collect()
}

fn numbers_in(text: &str) -> BTreeSet<i32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|digits| !digits.is_empty())
        .map(|digits| digits.parse().expect("a small number"))
        .collect()
}

/// The constants of `pub mod exit` in src/error.rs, read from the source.
fn exit_constants() -> Vec<(String, i32)> {
    let source = read("src/error.rs");
    let start = source
        .find("pub mod exit {")
        .expect("src/error.rs has `pub mod exit`");
    let body = &source[start..];
    let body = &body[..body.find("\n}").expect("end of `mod exit`")];
    let constants: Vec<(String, i32)> = body
        .lines()
        .filter_map(|line| {
            let declaration = line.trim().strip_prefix("pub const ")?;
            let (name, value) = declaration.split_once(": i32 = ")?;
            let value = value.trim_end_matches(';').trim().parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect();
    assert!(
        constants.len() >= 5,
        "expected the exit status constants in src/error.rs, found {constants:?}"
    );
    constants
}

fn assert_table_matches_constants(document: &str, numbers: &BTreeSet<i32>) {
    let constants = exit_constants();
    for (name, value) in &constants {
        assert!(
            numbers.contains(value),
            "{document}: the exit status table has no entry for {value} (exit::{name}); entries: {numbers:?}"
        );
    }
    let values: BTreeSet<i32> = constants.iter().map(|(_, value)| *value).collect();
    for number in numbers {
        assert!(
            values.contains(number),
            "{document}: the exit status table lists {number}, which is no constant in src/error.rs's `exit` module"
        );
    }
}

#[test]
fn man_page_names_every_long_option_of_help() {
    let help = long_options(&help_text());
    assert!(
        help.contains("--listen") && help.contains("--help"),
        "--help lists no options? {help:?}"
    );
    let page = long_options(&man_page());
    let missing: Vec<&String> = help.difference(&page).collect();
    assert!(
        missing.is_empty(),
        "man/sockhold.1 does not mention {missing:?} (write them as \\-\\-name)"
    );
}

#[test]
fn man_page_options_section_documents_only_real_options() {
    let help = long_options(&help_text());
    let page = man_page();
    let section = man_section(&page, "OPTIONS");
    let documented: BTreeSet<String> = tagged_paragraph_headings(&section)
        .into_iter()
        .flat_map(long_options)
        .collect();
    assert!(
        documented.contains("--listen"),
        "no options found in the man page's OPTIONS headings"
    );
    let unknown: Vec<&String> = documented.difference(&help).collect();
    assert!(
        unknown.is_empty(),
        "man/sockhold.1 documents {unknown:?}, which `sockhold --help` does not show"
    );
}

#[test]
fn man_page_exit_status_table_lists_every_status_of_the_code() {
    let page = man_page();
    let section = man_section(&page, "EXIT STATUS");
    let numbers: BTreeSet<i32> = tagged_paragraph_headings(&section)
        .into_iter()
        .flat_map(numbers_in)
        .collect();
    assert_table_matches_constants("man/sockhold.1", &numbers);
}

#[test]
fn readme_exit_status_table_lists_every_status_of_the_code() {
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Exit status"))
        .expect("README.md has a `## Exit status` section");
    // The first cell of each table row, after the header and the rule.
    let numbers: BTreeSet<i32> = section
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2)
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(numbers_in)
        .collect();
    assert_table_matches_constants("README.md", &numbers);
}

#[test]
fn man_page_lints_clean_with_groff() {
    let page = repo_path("man/sockhold.1");
    let output = Command::new("groff")
        .args(["-ww", "-man", "-z"])
        .arg(&page)
        .output()
        .unwrap_or_else(|error| panic!("{}", cannot_run("groff".as_ref(), &error)));
    let messages = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && messages.is_empty(),
        "groff -ww -man -z man/sockhold.1 ({}):\n{messages}",
        output.status
    );
}

/// Every `--help` sockhold has: the supervisor's and the client's.
const HELP_COMMANDS: [&[&str]; 4] = [
    &["--help"],
    &["reload", "--help"],
    &["status", "--help"],
    &["stop", "--help"],
];

/// The lines of `text` wider than `columns` characters, not counting the
/// terminal's colour sequences (`ESC [ ... m`).
fn lines_wider_than(text: &str, columns: usize) -> Vec<&str> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| visible_width(line) > columns)
        .collect()
}

fn visible_width(line: &str) -> usize {
    let mut width = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[', parameters, then a final letter.
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            width += 1;
        }
    }
    width
}

#[test]
fn help_piped_fits_80_columns() {
    for args in HELP_COMMANDS {
        // Not a terminal: stdout and stderr are pipes, stdin /dev/null.
        let output = Command::new(sockhold_bin())
            .args(args)
            .env_remove("COLUMNS")
            .output()
            .expect("run sockhold --help");
        assert!(output.status.success(), "sockhold {args:?} failed");
        let help = String::from_utf8(output.stdout).expect("--help is UTF-8");
        let wide = lines_wider_than(&help, 80);
        assert!(
            wide.is_empty(),
            "sockhold {args:?} piped has lines over 80 columns:\n{}",
            wide.join("\n")
        );
    }
}

/// `sockhold ARGS` on a new pseudo-terminal of `columns` columns (made by
/// python3's pty module), and what it wrote there.
fn on_a_terminal(columns: u16, args: &[&str]) -> String {
    const SCRIPT: &str = r#"
import fcntl, os, pty, struct, sys, termios
columns = int(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    os.execv(sys.argv[2], sys.argv[2:])
out = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:  # EIO: the terminal's last user has gone
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let output = Command::new("python3")
        .args(["-c", SCRIPT, &columns.to_string(), sockhold_bin()])
        .args(args)
        .env_remove("COLUMNS")
        .output()
        .unwrap_or_else(|error| panic!("{}", cannot_run("python3".as_ref(), &error)));
    assert!(
        output.status.success(),
        "sockhold {args:?} on a terminal: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("--help is UTF-8")
}

#[test]
fn help_on_a_terminal_is_wrapped_to_its_width_up_to_100_columns() {
    let narrow = on_a_terminal(60, &["--help"]);
    assert!(narrow.contains("--listen"), "{narrow}");
    let wide = lines_wider_than(&narrow, 60);
    assert!(
        wide.is_empty(),
        "--help on a 60-column terminal has wider lines:\n{}",
        wide.join("\n")
    );
    let broad = on_a_terminal(200, &["--help"]);
    assert!(
        lines_wider_than(&broad, 100).is_empty(),
        "--help on a 200-column terminal is wider than 100 columns:\n{broad}"
    );
    assert!(
        !lines_wider_than(&broad, 80).is_empty(),
        "--help on a 200-column terminal is no wider than 80 columns:\n{broad}"
    );
}

#[test]
fn colour_sequences_take_no_columns() {
    assert_eq!(
        visible_width("\u{1b}[1m\u{1b}[4mUsage:\u{1b}[0m sockhold"),
        15
    );
}

#[test]
fn options_are_read_from_roff_as_whole_words() {
    let roff = r"--ready-timeout, \fB\-\-stop\-signal\fP, \f[I]\-\-ready\f[], \-\- COMMAND, --b-";
    let found = long_options(&roff_to_text(roff));
    let expected: BTreeSet<String> = ["--ready", "--ready-timeout", "--stop-signal"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}
