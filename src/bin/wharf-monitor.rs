//! `wharf-monitor`: the per-container monitor; see `wharf::monitor`.

fn main() -> std::process::ExitCode {
    wharf::monitor::main(std::env::args_os().skip(1))
}
