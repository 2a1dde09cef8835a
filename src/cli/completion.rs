//! `kubectl tokenmint completion bash|zsh|fish|powershell|elvish`: the completion script of the
//! `kubectl-tokenmint` command, generated from the argument definitions.

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
