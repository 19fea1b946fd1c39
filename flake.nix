{
  # pytest-cloud as a nix flake.
  #
  #   nix run . -- probe --node node1        the CLI, with ssh, rsync and GNU parallel on its PATH
  #   nix profile install .                  install it (plus completions and man pages)
  #   nix develop                            cargo/rustc, openssh, rsync, parallel, python3 + pytest + xdist
  #   nix flake check                        builds the package, which runs the network-free tests
  #
  # No flake.lock is checked in: it can only be written by a nix that fetches nixpkgs, which the
  # machines this project is developed on cannot do. The first `nix` command on a machine that
  # can will write one (or pass `--override-input nixpkgs nixpkgs` to use your registry's).
  # scripts/check-flake parse-checks this file where nix-instantiate is installed.
  description = "pytest-cloud: run a pytest suite across ssh nodes (probe, plan, sync, pytest-xdist)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # The tools pytest-cloud runs at run time; it looks them up on PATH.
      runtimeTools = pkgs: [
        pkgs.openssh
        pkgs.rsync
        pkgs.parallel
      ];

      package =
        pkgs:
        let
          lib = pkgs.lib;
          fs = lib.fileset;
        in
        pkgs.rustPlatform.buildRustPackage {
          pname = "pytest-cloud";
          version = (lib.importTOML ./Cargo.toml).package.version;

          # Only what the build and its tests read: share/ holds the checked-in completions and
          # man pages (installed below) and the plugin's glue.py (compiled into the binary);
          # scripts/ holds local-cluster and gen-share. Editing README or .ci does not rebuild.
          src = fs.toSource {
            root = ./.;
            fileset = fs.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./src
              ./tests
              ./share
              ./scripts
            ];
          };
          cargoLock.lockFile = ./Cargo.lock;

          nativeBuildInputs = [
            pkgs.makeWrapper
            pkgs.installShellFiles
          ];

          # The network-free tests only: the unit tests; tests/generated.rs (the checked-in
          # completions and man pages are current, and bash completes with them);
          # tests/help_examples.rs (every --help example parses); tests/docs.rs (share/doc
          # matches the code). The integration tests start real sshd nodes as separate unix
          # users (scripts/local-cluster), which needs root and loopback addresses the build
          # sandbox does not have; .ci/run runs them.
          cargoTestFlags = [
            "--lib"
            "--bins"
            "--test"
            "generated"
            "--test"
            "help_examples"
            "--test"
            "docs"
          ];

          postInstall = ''
            installShellCompletion --cmd pytest-cloud \
              --bash share/completions/pytest-cloud.bash \
              --zsh share/completions/pytest-cloud.zsh \
              --fish share/completions/pytest-cloud.fish
            installManPage share/man/man1/pytest-cloud*.1
            wrapProgram $out/bin/pytest-cloud \
              --prefix PATH : ${lib.makeBinPath (runtimeTools pkgs)}
          '';

          meta = {
            description = "Run a pytest suite across ssh nodes: probe, plan, sync, pytest-xdist";
            mainProgram = "pytest-cloud";
            platforms = lib.platforms.unix;
          };
        };
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          pytest-cloud = package pkgs;
          default = self.packages.${system}.pytest-cloud;
        }
      );

      apps = forAllSystems (
        system: pkgs: {
          default = {
            type = "app";
            program = "${self.packages.${system}.default}/bin/pytest-cloud";
          };
        }
      );

      # One check per derivation; the package build runs the network-free tests (see above).
      checks = forAllSystems (
        system: pkgs: {
          package = self.packages.${system}.default;
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            # The checks' build inputs (rustPlatform's cargo and rustc hooks, makeWrapper, ...).
            inputsFrom = builtins.attrValues self.checks.${system};
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              (pkgs.python3.withPackages (ps: [
                ps.pytest
                ps.pytest-xdist
              ]))
            ]
            ++ runtimeTools pkgs;
          };
        }
      );
    };
}
