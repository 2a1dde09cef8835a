//! The `tokenmint` binary, linked as `kubectl-tokenmint` the way it is installed, against the
//! fake API server over a real socket: it acts as the plugin (by its name alone), connects with
//! the kubeconfig (its current context and that context's namespace, or `--context`), and
//! exits 0, 1 or 2; linked as `kubectl_complete-tokenmint` it is kubectl's completer; under its
//! own name it is still `tokenmint`. Completion needs no cluster.

use crate::support::fake_api::Fake;
use crate::world::World;
use jiff::Timestamp;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Serves `fake` on 127.0.0.1 over HTTP.
async fn serve(fake: Fake) -> SocketAddr {
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let fake = fake.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            fake.handle(&parts, &body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn kubeconfig(dir: &Path, address: SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{address}\"}}
users:
- name: me
  user: {{token: not-checked}}
contexts:
- name: team-a
  context: {{cluster: fake, user: me, namespace: team-a}}
- name: elsewhere
  context: {{cluster: fake, user: me, namespace: elsewhere}}
current-context: team-a
"
        ),
    )
    .unwrap();
    path
}

async fn run(program: &Path, args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("TOKENMINT_OPERATOR_NAMESPACE")
        .env("HOME", "/nonexistent");
    if let Some(path) = kubeconfig {
        command.env("KUBECONFIG", path);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_linked_as_kubectl_tokenmint_is_the_plugin() {
    // The binary reads the clock: a world of now.
    let w = World::installed(Timestamp::now());
    let address = serve(w.fake.clone()).await;
    let dir = std::env::temp_dir().join(format!("tokenmint-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("kubectl-tokenmint");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tokenmint"), &plugin).unwrap();
    let config = kubeconfig(&dir, address);

    // The current context's namespace, without -n.
    let out = run(&plugin, &["status", "dsg/dashboards"], Some(&config)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("DatasourceGrant team-a/dashboards\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("Next step\n  None: all is well.\n"));
    // Not Ready: 1.
    let out = run(&plugin, &["status", "dsg/payroll"], Some(&config)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // Could not run: 2, the error on stderr.
    let out = run(
        &plugin,
        &["status", "dsg/dashboards", "--context", "elsewhere"],
        Some(&config),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: DatasourceGrant elsewhere/dashboards not found\n"
    );
    assert_eq!(text(&out.stdout), "");
    let out = run(&plugin, &["check", "-o", "json"], Some(&config)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = run(&plugin, &["status", "dsg/x"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: no cluster to talk to"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&plugin, &["status"], None).await;
    assert_eq!(out.status.code(), Some(2), "usage errors too");
    assert!(
        text(&out.stderr).contains("Usage: kubectl tokenmint status"),
        "{}",
        text(&out.stderr)
    );

    // Completion needs no cluster.
    let out = run(&plugin, &["completion", "bash"], None).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("kubectl-tokenmint"));

    // As kubectl's completer of `kubectl tokenmint ...` (kubectl 1.26+), by its name too.
    let completer = dir.join("kubectl_complete-tokenmint");
    let _ = std::fs::remove_file(&completer);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tokenmint"), &completer).unwrap();
    let out = run(&completer, &["re"], None).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "renew\nrevoke\n:4\n");
    let out = run(&completer, &["status", ""], None).await;
    assert_eq!(text(&out.stdout), "dsg/\ngtr/\nsk/\n:6\n");

    // Under its own name, the same file is tokenmint.
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_tokenmint")),
        &["--help"],
        None,
    )
    .await;
    assert!(
        text(&out.stdout).contains("operator"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("kubectl tokenmint"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn completion_scripts_cover_every_command_and_flag() {
    let w = World::empty(Timestamp::now());
    for (shell, marker) in [
        (
            "bash",
            "complete -F _kubectl_tokenmint -o bashdefault -o default kubectl-tokenmint\n",
        ),
        ("zsh", "#compdef kubectl-tokenmint"),
        ("fish", "complete -c kubectl-tokenmint"),
    ] {
        let ran = crate::world::kubectl(w.fake.client(), w.now, &["completion", shell]).await;
        assert_eq!(ran.exit, tokenmint::cli::output::Exit::Fine, "{}", ran.err);
        assert!(ran.out.contains(marker), "{shell}");
        for word in [
            "status",
            "inspect",
            "renew",
            "revoke",
            "check",
            "completion",
            "operator-namespace",
            "timeout",
            "all-namespaces",
        ] {
            assert!(ran.out.contains(word), "{shell} lacks {word}");
        }
    }
    assert!(
        w.fake.calls().is_empty(),
        "completion asks nothing of the cluster"
    );
    let ran = crate::world::kubectl(w.fake.client(), w.now, &["completion", "tcsh"]).await;
    assert_eq!(ran.exit, tokenmint::cli::output::Exit::Error);
}

/// The bash script completes, in bash, what a person types: sub-commands, their flags, the
/// values of -o.
#[cfg(unix)]
#[tokio::test]
async fn bash_completes_sub_commands_flags_and_values() {
    let w = World::empty(Timestamp::now());
    let script = crate::world::kubectl(w.fake.client(), w.now, &["completion", "bash"])
        .await
        .out;
    let complete = |words: &[&str]| {
        let line = words.join(" ");
        let program = format!(
            "{script}\nCOMP_WORDS=({line}); COMP_CWORD={}; $(complete -p kubectl-tokenmint | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') kubectl-tokenmint \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            words.len() - 1
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(complete(&["kubectl-tokenmint", "re"]), "renew revoke");
    assert_eq!(complete(&["kubectl-tokenmint", "renew", "--wa"]), "--wait");
    assert_eq!(
        complete(&["kubectl-tokenmint", "status", "-o", "''"]),
        "json yaml"
    );
    assert_eq!(complete(&["kubectl-tokenmint", "completion", "z"]), "zsh");
}
