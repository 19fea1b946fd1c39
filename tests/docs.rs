//! The pages in share/doc stay true: the exit-code table lists every `Exit` code, the planning
//! page's worked example is what `plan` prints today, and relative links resolve.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn exit_code_page_lists_every_exit_code_and_no_other() {
    // The codes of `pub enum Exit` in src/error.rs: lines like `    Usage = 64,`.
    let src = read("src/error.rs");
    let body = &src[src.find("pub enum Exit").unwrap()..];
    let body = &body[..body.find('}').unwrap()];
    let codes: Vec<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_suffix(',')?.split_once(" = ").map(|(_, n)| n.to_string()))
        .collect();
    assert!(codes.len() >= 10, "{codes:?}");
    let page = read("share/doc/exit-codes.md");
    let first_table: Vec<&str> = page
        .lines()
        .skip_while(|l| !l.starts_with("| code |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    let documented: Vec<String> = first_table.iter().map(|l| l.split('|').nth(1).unwrap().trim().to_string()).collect();
    assert_eq!(documented, codes, "share/doc/exit-codes.md's first table must list src/error.rs `Exit` in order");
}

/// `$ pytest-cloud ...` commands in console blocks, with the stderr lines shown after them.
fn console_examples(page: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_console = false;
    let mut lines = page.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if !in_console || !line.starts_with("$ pytest-cloud ") {
            continue;
        }
        let mut cmd = line[2..].to_string();
        while cmd.ends_with('\\') {
            cmd.pop();
            cmd.push_str(lines.next().unwrap().trim_start());
        }
        let mut shown = Vec::new();
        while let Some(l) = lines.peek() {
            if l.starts_with('$') || l.starts_with("```") {
                break;
            }
            shown.push(lines.next().unwrap().to_string());
        }
        out.push((cmd, shown));
    }
    out
}

#[test]
fn planning_page_worked_example_is_what_plan_prints() {
    let page = read("share/doc/planning.md");
    let examples = console_examples(&page);
    assert_eq!(examples.len(), 2, "expected the two worked examples");
    for (cmd, shown) in examples {
        let words = shell_words::split(&cmd).unwrap();
        let lt = words.iter().position(|w| w == "<").expect("reads an inventory with <");
        let args: Vec<&String> = words[1..lt].iter().collect();
        let input = read(&words[lt + 1]);
        let out = Command::cargo_bin("pytest-cloud").unwrap().current_dir(repo()).args(args).write_stdin(input).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().collect::<Vec<_>>(), shown, "share/doc/planning.md: `{cmd}` prints otherwise now");
        assert_eq!(out.status.code(), Some(1), "{cmd}: one node is dropped in both examples");
    }
}

#[test]
fn relative_links_in_share_doc_resolve() {
    let dir = repo().join("share/doc");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap()];
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            assert!(Path::new(&dir).join(file).exists(), "{}: link to {target} does not resolve", path.display());
        }
    }
}

#[test]
fn every_xdist_pin_is_the_range_the_glue_accepts() {
    // glue.py: `XDIST_TESTED = ((3, 6), (3, 9))` -> "pytest-xdist>=3.6,<3.9".
    let glue = read("share/pytest-cloud-plugin/src/pytest_cloud/glue.py");
    let line = glue.lines().find(|l| l.starts_with("XDIST_TESTED = ")).expect("XDIST_TESTED in glue.py");
    let nums: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    assert_eq!(nums.len(), 4, "{line}");
    let range = format!(">={}.{},<{}.{}", nums[0], nums[1], nums[2], nums[3]);
    let pin = format!("pytest-xdist{range}");
    let pyproject = read("share/pytest-cloud-plugin/pyproject.toml");
    let deps = pyproject.lines().find(|l| l.starts_with("dependencies = ")).expect("dependencies in pyproject.toml");
    assert!(deps.contains(&format!("\"{pin}\"")), "the plugin's pyproject.toml must pin {pin} (the glue refuses others): {deps}");
    for msg in ["install it with: python -m pip install '", "pytest-cloud supports pytest-xdist "] {
        let at = glue.find(msg).unwrap_or_else(|| panic!("{msg:?} in glue.py"));
        assert!(glue[at..].lines().next().unwrap().contains(&range), "glue.py's message names {range}: {}", glue[at..].lines().next().unwrap());
    }
    for file in ["scripts/test", "scripts/demo", "tests/common/example.rs"] {
        for (i, l) in read(file).lines().enumerate().filter(|(_, l)| l.contains("pytest-xdist>=")) {
            assert!(l.contains(&pin) || l.contains("pytest-xdist==3.6.*"), "{file}:{}: installs another xdist range than {pin}: {l}", i + 1);
        }
    }
}

#[test]
fn the_readmes_option_table_is_the_binarys() {
    let out = Command::cargo_bin("pytest-cloud").unwrap().args(["options", "--json"]).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("options --json prints JSON");
    let table = table.as_array().unwrap();
    let readme = read("README.md");
    // Rows like "| `--cloud-node NODE` | help |".
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--cloud-")).collect();
    let documented: Vec<String> =
        rows.iter().map(|l| l[3..].split(|c| c == ' ' || c == '`').next().unwrap().to_string()).collect();
    let names: Vec<String> = table.iter().map(|o| o["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(documented, names, "README's launcher option table must list src/options.rs's options in order");
    for (row, o) in rows.iter().zip(table) {
        if let Some(d) = o["default"].as_str().filter(|d| d.chars().all(|c| c.is_ascii_digit()) || d.contains('@')) {
            assert!(row.contains(d), "README row for {} must give its default {d}: {row}", o["name"]);
        }
    }
    let said = &readme[readme.find("The pytest plugin registers the same options").expect("README says what the plugin registers")..];
    let said = &said[..said.find("\n\n").unwrap_or(said.len())];
    for o in table.iter().filter(|o| o["plugin"] == false) {
        assert!(said.contains(o["name"].as_str().unwrap()), "README must name {} as one the plugin leaves out: {said}", o["name"]);
    }
}
