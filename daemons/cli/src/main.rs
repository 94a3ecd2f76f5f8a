//! `logtank`: the operator's command. Parsing lives in the library; this only runs it.

fn main() -> std::process::ExitCode {
    logtank_cli::main()
}
