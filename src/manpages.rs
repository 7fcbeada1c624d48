//! The man pages, for the Debian package (`liveconf generate man-pages DIR`).
//!
//! * `liveconf(1)` and one page per subcommand (`liveconf-render(1)`,
//!   `liveconf-keys-import(1)`...): clap_mangen's sections from the clap
//!   definitions, then EXIT STATUS (from the tables in [`crate::cli::exit`]),
//!   and on `liveconf(1)` the settings file (from the settings table), FILES,
//!   SIGNALS and ENVIRONMENT; SEE ALSO names only pages that are generated
//!   here.
//! * `liveconf-resources(5)`: the README's "Resource files", "Template
//!   reference" and "Two engines" sections, converted from Markdown, so the
//!   page and the README never disagree.
//!
//! Non-ASCII text is written as groff escapes (`\[u2192]`), so the pages
//! need no preprocessor.

use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

/// A generated page.
pub struct Page {
    /// `liveconf-render`.
    pub name: String,
    /// `1` or `5`.
    pub section: &'static str,
    /// The roff source.
    pub text: String,
}

impl Page {
    /// `liveconf-render.1`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }
}

/// The README, the source of `liveconf-resources(5)`.
const README: &str = include_str!("../README.md");

/// The page of the resource format.
pub const RESOURCES: &str = "liveconf-resources";

/// Every page: liveconf(1), each subcommand's, liveconf-resources(5).
pub fn pages() -> Vec<Page> {
    let mut cmd = without_help_subcommands(crate::cli::command());
    cmd.build();
    let mut out = vec![command_page(&cmd, &[])];
    collect(&cmd, &mut Vec::new(), &mut out);
    out.push(resources_page());
    out
}

/// The page `name` (`liveconf-render`, or without `liveconf-`: `render`,
/// `keys-import`, `resources`).
pub fn page(name: &str) -> Option<Page> {
    let full = if name == "liveconf" || name.starts_with("liveconf-") {
        name.to_string()
    } else {
        format!("liveconf-{name}")
    };
    pages().into_iter().find(|p| p.name == full)
}

fn collect<'a>(cmd: &'a clap::Command, path: &mut Vec<&'a str>, out: &mut Vec<Page>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        path.push(sub.get_name());
        out.push(command_page(sub, path));
        collect(sub, path, out);
        path.pop();
    }
}

/// `help` subcommands are a clap convenience, not pages.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.disable_help_subcommand(true);
    for n in names {
        cmd = cmd.mut_subcommand(&n, without_help_subcommands);
    }
    cmd
}

/// The page name of the subcommand at `path` (`[]` for liveconf itself).
fn page_name(path: &[&str]) -> String {
    std::iter::once("liveconf")
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join("-")
}

/// The exit code table a subcommand's page shows.
fn exit_codes(path: &[&str]) -> &'static [crate::cli::exit::Code] {
    use crate::cli::exit;
    match path.first().copied() {
        Some("fleet") if path.get(1) == Some(&"wait") => exit::FLEET_WAIT,
        Some("status") => exit::STATUS,
        Some("fleet") => exit::FLEET,
        Some("keys") => exit::KEYS,
        _ => exit::RENDER,
    }
}

fn command_page(cmd: &clap::Command, path: &[&str]) -> Page {
    let name = page_name(path);
    let version = cmd_version();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .source(format!("liveconf {version}"))
        .manual("liveconf manual");
    let mut buf: Vec<u8> = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = man.render_title(&mut buf);
    let _ = man.render_name_section(&mut buf);
    let _ = man.render_synopsis_section(&mut buf);
    let _ = man.render_description_section(&mut buf);
    let _ = man.render_options_section(&mut buf);
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        let _ = man.render_subcommands_section(&mut buf);
    }
    let mut roff = Roff::new();
    exit_status(&mut roff, path);
    if path.is_empty() {
        settings_section(&mut roff);
        files_section(&mut roff);
        signals_section(&mut roff);
        environment_section(&mut roff);
    }
    see_also(&mut roff, &name, path);
    buf.extend_from_slice(roff.to_roff().as_bytes());
    if cmd.get_version().is_some() {
        let _ = man.render_version_section(&mut buf);
    }
    Page {
        name,
        section: "1",
        text: ascii(&once_preamble(&String::from_utf8_lossy(&buf))),
    }
}

fn cmd_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn exit_status(roff: &mut Roff, path: &[&str]) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, text) in exit_codes(path) {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*text)]);
    }
    if path.is_empty() {
        roff.control("PP", []);
        roff.text([
            roman("status, fleet and keys have exit codes of their own: see "),
            bold("liveconf-status"),
            roman("(1), "),
            bold("liveconf-fleet"),
            roman("(1) and "),
            bold("liveconf-keys"),
            roman("(1)."),
        ]);
    }
}

fn settings_section(roff: &mut Roff) {
    use crate::settings::SETTINGS;
    roff.control("SH", ["SETTINGS FILE"]);
    paragraph(
        roff,
        &format!(
            "liveconf reads `{}/liveconf.toml` when it exists, or the file given with `--config FILE` \
             (confd's `confd.toml` is read as confd reads it). Every key is optional, and a flag on \
             the command line always wins over the file. Relative paths in the file are relative to \
             its directory. An unknown key is an error naming the file and line. Durations are \
             written like `\"30s\"`, `\"100ms\"` or `\"1h30m\"`. *On SIGHUP* says what the daemon \
             does with a new value: *applied* from the next render, *new connection* to the \
             backend, or *restart* (the running daemon keeps the old value).",
            crate::settings::DEFAULT_CONFDIR
        ),
    );
    for d in SETTINGS {
        roff.control("TP", []);
        let mut tag = vec![bold(d.name)];
        if let Some((long, value, _)) = d.parsed_flag() {
            tag.push(roman(" ("));
            tag.push(bold(format!("--{long}")));
            if let Some(v) = value {
                tag.push(roman(" "));
                tag.push(italic(v));
            }
            tag.push(roman(")"));
        }
        roff.text(tag);
        let mut body = vec![italic("default:"), roman(" ")];
        body.extend(inline(d.default));
        body.push(roman("; "));
        body.push(italic("on SIGHUP:"));
        body.push(roman(format!(" {}. ", d.sighup.word())));
        body.extend(inline(&readme_links(d.doc)));
        body.push(roman("."));
        roff.text(body);
    }
}

fn files_section(roff: &mut Roff) {
    use crate::settings::{DEFAULT_CONFDIR, DEFAULT_STATE_DIR, OWED_DIR};
    roff.control("SH", ["FILES"]);
    let files: [(String, &str); 9] = [
        (
            format!("{DEFAULT_CONFDIR}/liveconf.toml"),
            "Settings (see SETTINGS FILE above); --confdir DIR reads DIR/liveconf.toml, or DIR/confd.toml when there is no liveconf.toml.",
        ),
        (
            format!("{DEFAULT_CONFDIR}/conf.d/*.toml"),
            "One resource per file, named after the file's stem; the format is in liveconf-resources(5).",
        ),
        (
            format!("{DEFAULT_CONFDIR}/templates/"),
            "Templates (Tera, or Go text/template for .tmpl files); subdirectories and symlinks are followed.",
        ),
        (
            format!("{DEFAULT_STATE_DIR}/status.json"),
            "The last outcome of every resource, written atomically after every run and batch; read by liveconf status.",
        ),
        (
            format!("{DEFAULT_STATE_DIR}/{OWED_DIR}/"),
            "One marker per resource whose reload command is due and has not succeeded; the next run, daemon or render --once, runs it.",
        ),
        (
            "/usr/share/liveconf/templates/".into(),
            "Reusable templates shipped with the package; include them from wrappers under templates/lib/.",
        ),
        (
            "/usr/share/liveconf/prometheus/liveconf.rules.yml".into(),
            "Prometheus alerting and recording rules for the daemon's metrics (their tests are in tests/ next to it).",
        ),
        (
            "/usr/share/liveconf/grafana/liveconf.json".into(),
            "A Grafana dashboard for the same metrics.",
        ),
        (
            "/usr/share/liveconf/php/LiveconfConfig.php".into(),
            "Reference PHP code for MediaWiki to read liveconf's files: JSON cached in APCu, or a PHP include with opcache.",
        ),
    ];
    for (path, text) in files {
        roff.control("TP", []);
        roff.text([bold(path)]);
        roff.text([roman(text)]);
    }
}

fn signals_section(roff: &mut Roff) {
    roff.control("SH", ["SIGNALS"]);
    let signals = [
        (
            "SIGHUP",
            "The daemon re-reads its settings file, conf.d/ and templates/ (systemctl reload liveconf sends it). Each changed setting is logged with what the reload did with it: applied, a new connection to the backend, or needs a restart. An invalid settings file or an unreadable conf.d/ keeps the whole running configuration; a resource file that no longer parses fails that resource at the load step.",
        ),
        (
            "SIGTERM, SIGINT",
            "The daemon stops cleanly and exits 0: reloads waiting out their reload_splay give up and stay owed (the next start, or render --once, runs them), batches that are running finish (each command is bounded by its command_timeout), the fleet report is withdrawn and status.json records the stop.",
        ),
        (
            "SIGXFSZ",
            "Ignored: a file larger than the file size limit fails its resource instead of killing liveconf.",
        ),
    ];
    for (sig, text) in signals {
        roff.control("TP", []);
        roff.text([bold(sig)]);
        roff.text([roman(text)]);
    }
}

fn environment_section(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    let vars = [
        (
            "JOURNAL_STREAM",
            "Set by systemd: text log lines then carry no timestamp (journald adds its own) and no colours.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd for a Type=notify unit: the daemon sends READY=1 after the first full render, a STATUS= line after each batch, and WATCHDOG=1 every WatchdogSec/2 (at most every 5 seconds) while its event loop runs.",
        ),
        (
            "any variable",
            "Templates read liveconf's environment with getenv (both engines), and check and reload commands inherit it: set what they need in the unit (Environment=).",
        ),
    ];
    for (var, text) in vars {
        roff.control("TP", []);
        roff.text([bold(var)]);
        roff.text([roman(text)]);
    }
}

/// SEE ALSO: liveconf(1), the subcommands' pages, liveconf-resources(5),
/// each but the page itself.
fn see_also(roff: &mut Roff, name: &str, path: &[&str]) {
    let mut refs: Vec<(String, &str)> = vec![("liveconf".into(), "1")];
    if path.first() == Some(&"keys") {
        refs.push(("liveconf-keys".into(), "1"));
        refs.push(("liveconf-keys-import".into(), "1"));
        refs.push(("liveconf-keys-export".into(), "1"));
        refs.push(("liveconf-render".into(), "1"));
    } else if !path.is_empty() {
        refs.push(("liveconf-render".into(), "1"));
        refs.push(("liveconf-check".into(), "1"));
        refs.push(("liveconf-status".into(), "1"));
        refs.push(("liveconf-fleet".into(), "1"));
    }
    if path.first() != Some(&"keys") || path.is_empty() {
        refs.push((RESOURCES.into(), "5"));
    }
    refs.retain(|(n, _)| n != name);
    if path.is_empty() {
        // liveconf(1) lists its subcommands already.
        refs.retain(|(n, _)| n == RESOURCES);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut line: Vec<Inline> = Vec::new();
    for (i, (n, s)) in refs.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(n.as_str()));
        line.push(roman(format!("({s})")));
    }
    line.push(roman(
        "; the README (/usr/share/doc/liveconf/README.md) has examples and the status, metrics and fleet reference.",
    ));
    roff.text(line);
}

/// liveconf-resources(5).
fn resources_page() -> Page {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "LIVECONF-RESOURCES",
            "5",
            "",
            &format!("liveconf {}", cmd_version()),
            "liveconf manual",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "liveconf-resources - liveconf resource files (conf.d/*.toml) and template functions",
    )]);
    roff.control("SH", ["DESCRIPTION"]);
    paragraph(
        &mut roff,
        "A *resource* is one file liveconf keeps in step with keys: `/etc/liveconf/conf.d/NAME.toml` \
         says which template renders it, from which keys, where it goes and which commands check \
         and reload it. This page holds the resource fields (with their defaults), how keys and \
         commands work, and the template functions of both engines: Tera 2 and confd's Go \
         text/template.",
    );
    let sections = markdown_sections(README);
    for (title, level) in [
        ("Resource files", 2),
        ("Template reference", 2),
        ("Two engines, chosen per resource", 3),
    ] {
        let Some(body) = sections
            .iter()
            .find(|s| s.title == title && s.level == level)
        else {
            continue;
        };
        roff.control("SH", [title.to_uppercase().as_str()]);
        markdown(&mut roff, &body.body);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("liveconf"),
        roman("(1), "),
        bold("liveconf-render"),
        roman("(1), "),
        bold("liveconf-check"),
        roman("(1); the README (/usr/share/doc/liveconf/README.md) has a worked example."),
    ]);
    Page {
        name: RESOURCES.into(),
        section: "5",
        text: ascii(&roff.render()),
    }
}

/// The page with roff's apostrophe preamble (which each clap_mangen
/// section writes again) kept once, at the top.
fn once_preamble(page: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    page.lines()
        .filter(|l| {
            !(l.starts_with(".ie \\n(.g") || l.starts_with(".el .ds Aq")) || seen.insert(*l)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Links to the README's sections, in a page: "Metrics in the README".
fn readme_links(doc: &str) -> String {
    let mut out = String::new();
    let mut rest = doc;
    while let Some(i) = rest.find("](#") {
        let Some(open) = rest[..i].rfind('[') else {
            break;
        };
        let Some(close) = rest[i..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..i]);
        out.push_str(" in the README");
        rest = &rest[i + close + 1..];
    }
    out.push_str(rest);
    out.replace("(see below)", "(see the README)")
}

/// Non-ASCII characters as groff escapes.
fn ascii(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", c as u32));
        }
    }
    out
}

/// A section of a Markdown document: its heading, level and lines (with
/// the subsections below it).
struct MdSection {
    title: String,
    level: usize,
    body: Vec<String>,
}

/// The sections of `doc` (setext `===`/`---` headings are levels 1 and 2,
/// `###` and deeper are ATX), each with everything up to the next heading
/// of its level or above. Fenced code is never a heading.
fn markdown_sections(doc: &str) -> Vec<MdSection> {
    let lines: Vec<&str> = doc.lines().collect();
    // (line index, level, title, lines the heading takes)
    let mut heads: Vec<(usize, usize, String, usize)> = Vec::new();
    let mut fence = false;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        if let Some(next) = lines.get(i + 1)
            && !l.trim().is_empty()
            && !l.starts_with('|')
            && !next.is_empty()
        {
            if next.chars().all(|c| c == '=') {
                heads.push((i, 1, l.trim().to_string(), 2));
                continue;
            }
            if next.chars().all(|c| c == '-') && next.len() >= 3 {
                heads.push((i, 2, l.trim().to_string(), 2));
                continue;
            }
        }
        let hashes = l.chars().take_while(|c| *c == '#').count();
        if hashes >= 3 && l[hashes..].starts_with(' ') {
            heads.push((i, hashes, l[hashes..].trim().to_string(), 1));
        }
    }
    let mut out = Vec::new();
    for (n, (i, level, title, taken)) in heads.iter().enumerate() {
        let end = heads[n + 1..]
            .iter()
            .find(|(_, l, _, _)| l <= level)
            .map(|(j, _, _, _)| *j)
            .unwrap_or(lines.len());
        out.push(MdSection {
            title: title.clone(),
            level: *level,
            body: lines[i + taken..end]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        });
    }
    out
}

/// One block of Markdown, as [`markdown`] reads it.
enum Block {
    Para(String),
    Heading(String),
    Code(Vec<String>),
    Table(Vec<Vec<String>>),
    Item { bullet: String, text: String },
}

/// Markdown lines → roff: paragraphs, `###` headings, fenced code, lists
/// and tables (each row a tagged paragraph: the first cell, then the
/// others labelled with their column's heading).
fn markdown(roff: &mut Roff, lines: &[String]) {
    for block in blocks(lines) {
        match block {
            Block::Para(text) => paragraph(roff, &text),
            Block::Heading(t) => {
                let plain: String = t.chars().filter(|c| *c != '`').collect();
                roff.control("SS", [plain.as_str()]);
            }
            Block::Code(code) => {
                roff.control("PP", []);
                roff.control("RS", ["4"]);
                roff.control("nf", []);
                for l in code {
                    roff.text([roman(l)]);
                }
                roff.control("fi", []);
                roff.control("RE", []);
            }
            Block::Item { bullet, text } => {
                roff.control("IP", [bullet.as_str(), "4"]);
                roff.text(inline(&text));
            }
            Block::Table(rows) => {
                let Some((head, rows)) = rows.split_first() else {
                    continue;
                };
                for row in rows {
                    roff.control("TP", []);
                    roff.text(inline(row.first().map(String::as_str).unwrap_or("")));
                    let mut body: Vec<Inline> = Vec::new();
                    for (i, cell) in row.iter().enumerate().skip(1) {
                        if !body.is_empty() {
                            body.push(clap_mangen::roff::line_break());
                        }
                        let h = head.get(i).map(String::as_str).unwrap_or("");
                        if !matches!(h, "meaning" | "returns" | "") {
                            body.push(italic(format!("{h}:")));
                            body.push(roman(" "));
                        }
                        body.extend(inline(cell));
                    }
                    roff.text(body);
                }
            }
        }
    }
}

fn paragraph(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.text(inline(text));
}

/// Splits Markdown lines into blocks.
fn blocks(lines: &[String]) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    // The text of the paragraph or list item being read, and its bullet.
    let mut open: Option<(Option<String>, String)> = None;
    let flush = |open: &mut Option<(Option<String>, String)>, out: &mut Vec<Block>| {
        if let Some((bullet, text)) = open.take() {
            out.push(match bullet {
                Some(bullet) => Block::Item { bullet, text },
                None => Block::Para(text),
            });
        }
    };
    while i < lines.len() {
        let line = &lines[i];
        let t = line.trim();
        if t.starts_with("```") {
            flush(&mut open, &mut out);
            let indent = line.len() - line.trim_start().len();
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let l = &lines[i];
                let cut = l.len() - l.trim_start().len();
                code.push(l[cut.min(indent)..].to_string());
                i += 1;
            }
            out.push(Block::Code(code));
            i += 1;
            continue;
        }
        if t.is_empty() {
            flush(&mut open, &mut out);
            i += 1;
            continue;
        }
        if t.starts_with('|') {
            flush(&mut open, &mut out);
            let mut rows = Vec::new();
            while i < lines.len() && lines[i].trim().starts_with('|') {
                let row = cells(lines[i].trim());
                if !row
                    .iter()
                    .all(|c| !c.is_empty() && c.chars().all(|c| c == '-' || c == ':'))
                {
                    rows.push(row);
                }
                i += 1;
            }
            out.push(Block::Table(rows));
            continue;
        }
        let hashes = t.chars().take_while(|c| *c == '#').count();
        if hashes >= 3 && t[hashes..].starts_with(' ') {
            flush(&mut open, &mut out);
            out.push(Block::Heading(t[hashes..].trim().to_string()));
            i += 1;
            continue;
        }
        let item = if let Some(rest) = t.strip_prefix("* ").or_else(|| t.strip_prefix("- ")) {
            Some(("\\(bu".to_string(), rest))
        } else {
            let digits = t.chars().take_while(char::is_ascii_digit).count();
            (digits > 0 && t[digits..].starts_with(". "))
                .then(|| (t[..digits + 1].to_string(), &t[digits + 2..]))
        };
        let top_level = line.len() == line.trim_start().len();
        match item {
            Some((bullet, rest)) if top_level => {
                flush(&mut open, &mut out);
                open = Some((Some(bullet), rest.to_string()));
            }
            _ => match &mut open {
                Some((_, text)) => {
                    text.push(' ');
                    text.push_str(t);
                }
                None => open = Some((None, t.to_string())),
            },
        }
        i += 1;
    }
    flush(&mut open, &mut out);
    out
}

/// The cells of a table row, `\|` read as `|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cell).trim().to_string()),
            c => cell.push(c),
        }
    }
    out.push(cell.trim().to_string());
    out
}

/// Markdown inline text → roff: `code` and **strong** in bold, *emphasis*
/// in italics, links as their text (with the address when it is a web
/// page).
pub(crate) fn inline(text: &str) -> Vec<Inline> {
    let mut out: Vec<Inline> = Vec::new();
    let mut plain = String::new();
    let push_plain = |plain: &mut String, out: &mut Vec<Inline>| {
        if !plain.is_empty() {
            out.push(roman(std::mem::take(plain)));
        }
    };
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let n = c.len_utf8();
        if c == '`' {
            let ticks = rest.chars().take_while(|c| *c == '`').count();
            let fence = &rest[..ticks];
            if let Some(end) = rest[ticks..].find(fence) {
                push_plain(&mut plain, &mut out);
                let code = rest[ticks..ticks + end].trim();
                out.push(bold(code));
                rest = &rest[ticks + end + ticks..];
                continue;
            }
        }
        if rest.starts_with("**")
            && let Some(end) = rest[2..].find("**")
        {
            push_plain(&mut plain, &mut out);
            for i in inline(&rest[2..2 + end]) {
                out.push(match i {
                    Inline::Roman(s) => bold(s),
                    other => other,
                });
            }
            rest = &rest[2 + end + 2..];
            continue;
        }
        if c == '*'
            && let Some(end) = rest[1..].find('*')
            && end > 0
            && !rest[1..].starts_with(' ')
            && !rest[1..1 + end].ends_with(' ')
        {
            push_plain(&mut plain, &mut out);
            for i in inline(&rest[1..1 + end]) {
                out.push(match i {
                    Inline::Roman(s) => italic(s),
                    other => other,
                });
            }
            rest = &rest[1 + end + 1..];
            continue;
        }
        if c == '['
            && let Some(close) = find_link_end(rest)
        {
            let (label, target) = close;
            push_plain(&mut plain, &mut out);
            out.extend(inline(label));
            if target.starts_with("http://") || target.starts_with("https://") {
                out.push(roman(format!(" ({target})")));
            }
            rest = &rest[label.len() + target.len() + 4..];
            continue;
        }
        plain.push(c);
        rest = &rest[n..];
    }
    push_plain(&mut plain, &mut out);
    out
}

/// `[label](target)` at the start of `s`: (label, target).
fn find_link_end(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0;
    let mut in_code = false;
    for (i, c) in s.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '[' if !in_code => depth += 1,
            ']' if !in_code => {
                depth -= 1;
                if depth == 0 {
                    let after = &s[i + 1..];
                    let target = after.strip_prefix('(')?;
                    let end = target.find(')')?;
                    return Some((&s[1..i], &target[..end]));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(inlines: &[Inline]) -> String {
        inlines
            .iter()
            .map(|i| match i {
                Inline::Roman(s) => s.clone(),
                Inline::Bold(s) => format!("<b>{s}</b>"),
                Inline::Italic(s) => format!("<i>{s}</i>"),
                Inline::LineBreak => "\n".into(),
            })
            .collect()
    }

    #[test]
    fn inline_markdown_becomes_fonts() {
        assert_eq!(
            text(&inline(
                "a `b*c` **d `e`** *f* [`g`](#x) [h](https://h.example/) \\| z"
            )),
            "a <b>b*c</b> <b>d </b><b>e</b> <i>f</i> <b>g</b> h (https://h.example/) \\| z"
        );
        assert_eq!(text(&inline("4 * 5 and 2*3")), "4 * 5 and 2*3");
    }

    #[test]
    fn tables_split_on_unescaped_bars() {
        assert_eq!(cells("| `a \\| b` | c |"), ["`a | b`", "c"]);
    }

    /// No page names a liveconf page that is not generated, and liveconf(1)
    /// has the sections an operator looks for.
    #[test]
    fn pages_refer_only_to_pages_that_exist() {
        let pages = pages();
        let names: Vec<String> = pages
            .iter()
            .map(|p| format!("{}({})", p.name, p.section))
            .collect();
        assert!(
            names.contains(&"liveconf-keys-import(1)".to_string()),
            "{names:?}"
        );
        for p in &pages {
            // References are written \fBname\fR(N), dashes escaped.
            let plain = p
                .text
                .replace("\\-", "-")
                .replace("\\fB", "")
                .replace("\\fR", "");
            for (i, _) in plain.match_indices("liveconf") {
                let rest = &plain[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(rest.len());
                let after = &rest[end..];
                if after.starts_with('(') && after[1..].starts_with(|c: char| c.is_ascii_digit()) {
                    let r = format!("{}{}", &rest[..end], &after[..3]);
                    assert!(
                        names.contains(&r),
                        "{} refers to {r}, which is not generated",
                        p.name
                    );
                }
            }
        }
        let main = &pages[0].text;
        for s in [
            "EXIT STATUS",
            "FILES",
            "SIGNALS",
            "ENVIRONMENT",
            "SETTINGS FILE",
            "SEE ALSO",
        ] {
            assert!(
                main.contains(&format!(".SH \"{s}\"")) || main.contains(&format!(".SH {s}")),
                "liveconf(1) lacks {s}"
            );
        }
        assert!(!main.contains("help(1)"), "{main}");
    }

    /// The resource page holds every field of `[template]` and every
    /// template function of both engines (read from their sources).
    #[test]
    fn the_resource_page_documents_every_field_and_function() {
        let page = resources_page()
            .text
            .replace("\\-", "-")
            .replace("\\(aq", "'");
        let resource = include_str!("resource.rs");
        let table = resource
            .split_once("struct TemplateTable {")
            .and_then(|(_, rest)| rest.split_once("\n}"))
            .map(|(body, _)| body)
            .expect("resource.rs: struct TemplateTable");
        let fields: Vec<&str> = table
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("#[") && !l.starts_with("//"))
            .filter_map(|l| l.split_once(':').map(|(f, _)| f.trim()))
            .filter(|f| !f.is_empty())
            .collect();
        assert!(fields.len() > 15, "{fields:?}");
        for f in fields {
            assert!(
                page.contains(&format!("\\fB{f}\\fR")),
                "liveconf-resources(5) lacks the field {f}"
            );
        }
        let functions = include_str!("functions.rs");
        let mut tera: Vec<&str> = Vec::new();
        for call in ["register_function(\"", "register_filter(\""] {
            for (i, _) in functions.match_indices(call) {
                let rest = &functions[i + call.len()..];
                tera.push(&rest[..rest.find('"').unwrap_or(0)]);
            }
        }
        assert!(tera.len() > 20, "{tera:?}");
        for f in tera {
            assert!(
                page.contains(f),
                "liveconf-resources(5) lacks the Tera function {f}"
            );
        }
        let go = include_str!("gotemplate.rs");
        let mut names: Vec<&str> = Vec::new();
        for (i, _) in go.match_indices("add(m, \"") {
            let rest = &go[i + 8..];
            names.push(&rest[..rest.find('"').unwrap_or(0)]);
        }
        assert!(names.len() > 20, "{names:?}");
        for f in names {
            assert!(
                page.contains(&format!("\\fB{f}\\fR")),
                "liveconf-resources(5) lacks the Go function {f}"
            );
        }
    }
}
