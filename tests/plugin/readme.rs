//! The README's examples of `kubectl tokenmint` are the plugin's real output: each block
//! follows a marker `<!-- plugin-example: ARGS -->` and holds what running `kubectl tokenmint
//! ARGS` prints in the demo world (`World::installed`, renewals answered by the stand-in
//! operator), and the rights table follows `<!-- plugin-rights -->`. The test fails when they
//! differ; `UPDATE_README=1 cargo test --test plugin readme` rewrites them.

use crate::world::{World, kubectl, now};
use tokenmint::cli::rights::{COMMANDS, Place};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const EXAMPLE: &str = "<!-- plugin-example: ";
const RIGHTS: &str = "<!-- plugin-rights -->";

async fn example(args: &str) -> String {
    let w = World::installed(now());
    let operator = w.stand_in_operator();
    let words: Vec<&str> = args.split_whitespace().collect();
    let ran = kubectl(w.fake.client(), w.now, &words).await;
    operator.abort();
    let mut block = format!("$ kubectl tokenmint {args}\n{}", ran.out);
    if !ran.err.is_empty() {
        block.push_str(&format!("{}\n", ran.err));
    }
    let code = ran.exit.code();
    if code != 0 {
        block.push_str(&format!("$ echo $?\n{code}\n"));
    }
    format!("```console\n{block}```\n")
}

fn rights_table() -> String {
    let mut table = String::from("| command | needs | uses when allowed |\n|---|---|---|\n");
    for (command, rights) in COMMANDS {
        let describe = |optional: bool| {
            rights
                .iter()
                .filter(|r| r.optional.is_some() == optional)
                .map(|r| {
                    let place = match r.place {
                        Place::Namespace => "",
                        Place::OperatorNamespace => " (operator namespace)",
                        Place::Keyring => " (the keyring Secret)",
                        Place::Lease => " (the leader Lease)",
                        Place::Cluster => " (cluster)",
                    };
                    let without = r.optional.map_or(String::new(), |w| format!(": {w}"));
                    format!("`{}`{place}{without}", r.describe())
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        table.push_str(&format!(
            "| `{command}` | {} | {} |\n",
            describe(false),
            describe(true)
        ));
    }
    table
}

/// The block after the marker line starting at `at`: from the next line to the end of the
/// fenced block or table.
fn block_end(readme: &str, body: usize, fenced: bool) -> usize {
    if fenced {
        let close = readme[body..]
            .find("\n```\n")
            .expect("an unterminated example block");
        body + close + "\n```\n".len()
    } else {
        readme[body..]
            .find("\n\n")
            .map_or(readme.len(), |end| body + end + 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_shows_the_plugins_real_output() {
    let readme = std::fs::read_to_string(README).unwrap();
    let mut rewritten = String::new();
    let mut rest = readme.as_str();
    let mut stale = Vec::new();
    let mut examples = 0;
    loop {
        let next_example = rest.find(EXAMPLE);
        let next_rights = rest.find(RIGHTS);
        let (at, fenced) = match (next_example, next_rights) {
            (Some(e), Some(r)) if r < e => (r, false),
            (Some(e), _) => (e, true),
            (None, Some(r)) => (r, false),
            (None, None) => break,
        };
        let line_end = at + rest[at..].find('\n').unwrap() + 1;
        let marker = &rest[at..line_end];
        let end = block_end(rest, line_end, fenced);
        let wanted = if fenced {
            examples += 1;
            let args = marker[EXAMPLE.len()..]
                .trim_end()
                .trim_end_matches("-->")
                .trim();
            example(args).await
        } else {
            rights_table()
        };
        if rest[line_end..end] != wanted {
            stale.push(marker.trim().to_owned());
        }
        rewritten.push_str(&rest[..line_end]);
        rewritten.push_str(&wanted);
        rest = &rest[end..];
    }
    rewritten.push_str(rest);
    assert!(
        examples >= 6,
        "the README shows the plugin's commands ({examples} examples)"
    );
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(README, rewritten).unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "README blocks differ from the plugin's output: {stale:#?}\nregenerate them with UPDATE_README=1 cargo test --test plugin readme"
    );
}
