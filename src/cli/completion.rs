//! Shell completion, from the argument definitions: `kubectl tokenmint completion
//! bash|zsh|fish|powershell|elvish` prints the script of the `kubectl-tokenmint` command; and
//! linked as `kubectl_complete-tokenmint`, the binary is the completer kubectl (1.26 and later)
//! runs for `kubectl tokenmint <TAB>`.

use super::output::{CliError, Exit};
use super::plugin::{PLUGIN_BINARY, Plugin};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The name bash's script is generated for: clap_complete's bash generator spells a `-` in the
/// command's name two ways in the names of nested sub-commands, and then completes none of
/// their flags. The script is then bound to the real name too.
const BASH_NAME: &str = "kubectl_tokenmint";

pub fn run(args: &CompletionArgs, out: &mut dyn Write) -> Result<Exit, CliError> {
    // Named as the executable the shell completes (the help's "kubectl tokenmint", with its
    // space, would be read as a command and its sub-command).
    let name = match args.shell {
        Shell::Bash => BASH_NAME,
        _ => PLUGIN_BINARY,
    };
    let mut command = Plugin::command().bin_name(name);
    clap_complete::generate(args.shell, &mut command, name, out);
    if args.shell == Shell::Bash {
        writeln!(
            out,
            "complete -F _{BASH_NAME} -o bashdefault -o default {PLUGIN_BINARY}"
        )?;
    }
    Ok(Exit::Fine)
}

/// The name kubectl (1.26 and later) runs to complete `kubectl tokenmint ...`: an executable
/// `kubectl_complete-<plugin>` on PATH, given the words after the plugin's name.
pub const KUBECTL_COMPLETE_BINARY: &str = "kubectl_complete-tokenmint";
/// Cobra's completion directives, which kubectl reads after the candidates.
const NO_SPACE: u8 = 2;
const NO_FILE_COMPLETION: u8 = 4;

/// The candidates for the last of `words` (the word being typed; the others precede it), in
/// the form kubectl reads from a plugin's completer: one a line, then `:DIRECTIVE`.
pub fn kubectl_candidates(words: &[String]) -> String {
    let mut command = Plugin::command();
    command.build();
    let (typed, before) = match words.split_last() {
        Some((typed, before)) => (typed.as_str(), before),
        None => ("", &[][..]),
    };
    let mut current = &command;
    let mut value_of: Option<&clap::Arg> = None;
    let mut positionals = 0;
    for word in before {
        if value_of.take().is_some() {
            continue;
        }
        let flag = |arg: &&clap::Arg| match word.strip_prefix("--") {
            Some(long) => arg.get_long() == Some(long),
            None => word.len() == 2 && arg.get_short().is_some_and(|s| word.ends_with(s)),
        };
        if word.starts_with('-') {
            value_of = current
                .get_arguments()
                .find(flag)
                .filter(|a| a.get_action().takes_values() && !a.is_require_equals_set());
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub;
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    let mut directive = NO_FILE_COMPLETION;
    let candidates: Vec<String> = match value_of {
        Some(arg) => arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect(),
        None if typed.starts_with('-') => current
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect(),
        None if current.has_subcommands() => current
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .map(|s| s.get_name().to_owned())
            .collect(),
        None => match current.get_positionals().nth(positionals) {
            // KIND/NAME, of status, renew and revoke: the kinds, the name to follow.
            Some(arg) if arg.get_id() == "target" => {
                directive |= NO_SPACE;
                super::target::Kind::ALL
                    .iter()
                    .map(|k| format!("{}/", k.short()))
                    .collect()
            }
            Some(arg) => arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect(),
            None => Vec::new(),
        },
    };
    let mut out: String = candidates
        .into_iter()
        .filter(|c| c.starts_with(typed))
        .map(|c| c + "\n")
        .collect();
    out.push_str(&format!(":{directive}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> String {
        kubectl_candidates(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn kubectl_completes_commands_flags_values_and_kinds() {
        assert_eq!(complete(&["re"]), "renew\nrevoke\n:4\n");
        assert_eq!(
            complete(&[""]).lines().count(),
            7,
            "six commands and the directive"
        );
        assert_eq!(complete(&["renew", "--wa"]), "--wait\n:4\n");
        assert_eq!(complete(&["status", "-o", ""]), "json\nyaml\n:4\n");
        assert_eq!(complete(&["status", "--output", "j"]), "json\n:4\n");
        assert_eq!(complete(&["inspect", ""]), "secret\ntoken\n:4\n");
        assert_eq!(
            complete(&["status", "-n", "team-a", ""]),
            "dsg/\ngtr/\nsk/\n:6\n"
        );
        assert_eq!(complete(&["renew", "--wait", "d"]), "dsg/\n:6\n");
        assert_eq!(complete(&["status", "dsg/x", ""]), ":4\n");
        assert_eq!(complete(&["completion", "z"]), "zsh\n:4\n");
        assert_eq!(complete(&[]), complete(&[""]));
    }
}
