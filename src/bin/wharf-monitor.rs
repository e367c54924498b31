//! `wharf-monitor`: the per-container monitor (see `wharf::monitor`), and
//! `wharf-monitor pause`, the init of a pod's shared PID namespace.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "pause") {
        wharf::sandbox::namespaces::run_pid_holder();
    }
    wharf::monitor::main(args)
}
