fn main() -> std::process::ExitCode {
    liveconf::cli::main()
}
