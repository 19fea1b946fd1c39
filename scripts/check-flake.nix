# Used by scripts/check-flake: evaluates ../flake.nix against a small stand-in for nixpkgs
# and returns { systems; problems; } where problems lists what is not as intended.
#
# The stand-in: each package is an attrset with a name and an outPath (so "${pkg}" works),
# rustPlatform.buildRustPackage and mkShell return their arguments, lib has the few functions
# the flake uses. An attribute the flake uses that the stand-in lacks fails the evaluation, as
# would a typo. It checks the flake's wiring, not nixpkgs' behaviour.
let
  flake = import ../flake.nix;
  tool = name: { inherit name; outPath = "/stub/" + name; };
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    importTOML = p: builtins.fromTOML (builtins.readFile p);
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
    platforms.unix = [ "unix" ];
    fileset = {
      unions = ps: ps;
      toSource = { root, fileset }: { inherit root; files = map toString fileset;
        missing = builtins.filter (p: !builtins.pathExists p) fileset; };
    };
  };
  pkgs = {
    inherit lib;
    openssh = tool "openssh"; rsync = tool "rsync"; parallel = tool "parallel";
    makeWrapper = tool "makeWrapper"; installShellFiles = tool "installShellFiles";
    cargo = tool "cargo"; rustc = tool "rustc"; clippy = tool "clippy"; rustfmt = tool "rustfmt";
    python3.withPackages = f: tool "python3-with-${builtins.concatStringsSep "+" (map (p: p.name) (f {
      pytest = tool "pytest"; pytest-xdist = tool "pytest-xdist"; }))}";
    rustPlatform.buildRustPackage = args: args // { outPath = "/stub/pytest-cloud"; };
    mkShell = args: args;
  };
  nixpkgs = { inherit lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] (_: pkgs); };
  self = flake.outputs { inherit self nixpkgs; };
  has = s: sub: builtins.match ".*${sub}.*" s != null;
  checkSystem = system:
    let
      p = self.packages.${system}.default;
      shell = self.devShells.${system}.default;
      shellNames = map (x: x.name) shell.packages;
      problems = builtins.filter (x: x != null) [
        (if p.pname == "pytest-cloud" then null else "pname is ${p.pname}")
        (if p.version == (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package.version then null else "version is not from Cargo.toml")
        (if p.cargoLock.lockFile == ../Cargo.lock then null else "cargoLock.lockFile is not ../Cargo.lock")
        (if p.src.missing == [] then null else "fileset paths missing: ${toString p.src.missing}")
        (if builtins.all (d: builtins.elem (toString d) p.src.files) [ ../share ../scripts ] then null else "the source must keep share/ and scripts/")
        (if has p.postInstall "wrapProgram [$]out/bin/pytest-cloud" && has p.postInstall "/stub/openssh/bin:/stub/rsync/bin:/stub/parallel/bin"
         then null else "the binary is not wrapped with openssh, rsync and parallel on PATH")
        (if has p.postInstall "installShellCompletion" && has p.postInstall "--bash share/completions/pytest-cloud.bash"
            && has p.postInstall "--zsh share/completions/pytest-cloud.zsh" && has p.postInstall "--fish share/completions/pytest-cloud.fish"
         then null else "completions are not installed")
        (if has p.postInstall "installManPage share/man/man1/pytest-cloud[*][.]1" then null else "man pages are not installed")
        (if builtins.elem "--lib" p.cargoTestFlags && builtins.elem "generated" p.cargoTestFlags then null else "cargoTestFlags do not select the network-free tests")
        (if self.checks.${system}.package == p then null else "checks.package is not the package")
        (if self.apps.${system}.default.program == "/stub/pytest-cloud/bin/pytest-cloud" then null else "apps.default does not run the binary")
        (if builtins.all (n: builtins.elem n shellNames) [ "cargo" "rustc" "openssh" "rsync" "parallel" "python3-with-pytest+pytest-xdist" ]
         then null else "devShells.default lacks one of cargo rustc openssh rsync parallel python3(pytest, pytest-xdist): has ${toString shellNames}")
      ];
    in map (m: "${system}: ${m}") problems;
in {
  systems = builtins.attrNames self.packages;
  problems = builtins.concatLists (map checkSystem (builtins.attrNames self.packages));
}
