fn main() -> std::process::ExitCode {
    brand_idp::cli::main()
}
