# Sourced by tf_moto_plan.sh (lint-deploy) and tf_moto_apply.sh (make apply-emulator): moto
# server as every AWS endpoint of an environment's copy, so both run the real provider
# against the same emulator set up the same way.
#   moto_start WORK CN [VAR=value...]   moto_server on a free port (log WORK/moto.log; VARs in
#                                       its environment), stopped on EXIT; sets PORT, MOTO and
#                                       CA_ARN (an ACM Private CA named CN, for private_ca_arn)
#   moto_environment DIR LOG            DIR's moto_override.tf (local backend, both providers
#                                       at moto), terraform.tfvars from its example with
#                                       CA_ARN, then init (output in LOG)
# The caller defines fail() and sources this from the repository root.
TERRAFORM=${TERRAFORM:-$(command -v terraform)}
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 AWS_EC2_METADATA_DISABLED=true

# Every service the stack uses; the plan's data sources and the apply's resources alike.
MOTO_SERVICES="acm acmpca appautoscaling cloudtrail cloudwatch ec2 ecs elbv2 events firehose iam kms lambda logs rds route53 s3 secretsmanager servicediscovery sfn sns sts"

moto_start() {
  local work=$1 cn=$2
  shift 2
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env "$@" moto_server -H 127.0.0.1 -p "$PORT" >"$work/moto.log" 2>&1 &
  MOTO=$!
  trap 'kill "$MOTO" 2>/dev/null; wait "$MOTO" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/moto-api/" 2>/dev/null && break
    sleep 0.2
  done
  CA_ARN=$(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=eu-west-1 python3 - "$PORT" "$cn" <<'EOF'
import sys, boto3
c = boto3.client("acm-pca", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
print(c.create_certificate_authority(
    CertificateAuthorityConfiguration={"KeyAlgorithm": "RSA_2048", "SigningAlgorithm": "SHA256WITHRSA",
                                       "Subject": {"CommonName": sys.argv[2]}},
    CertificateAuthorityType="ROOT")["CertificateAuthorityArn"])
EOF
  ) || { cat "$work/moto.log"; fail "moto server did not answer on port $PORT"; }
}

moto_provider() { # alias-line
  local svc
  cat <<EOF
provider "aws" {
  $1
  region                      = "eu-west-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  # moto answers what it has not implemented with HTTP 500, which the SDK would retry 25
  # times with backoff for every such call.
  max_retries = 2
  endpoints {
EOF
  for svc in $MOTO_SERVICES; do echo "    $svc = \"http://127.0.0.1:$PORT\""; done
  printf '  }\n}\n'
}

moto_environment() {
  local dir=$1 log=$2
  { printf 'terraform {\n  backend "local" {}\n}\n'; moto_provider ""; moto_provider 'alias = "generator"'; } >"$dir/moto_override.tf"
  sed "s#^private_ca_arn *=.*#private_ca_arn = \"$CA_ARN\"#" "$dir/terraform.tfvars.example" >"$dir/terraform.tfvars"
  "$TERRAFORM" -chdir="$dir" init -plugin-dir="$TF_PLUGIN_DIR" -input=false -no-color >"$log" 2>&1 || {
    cat "$log"; fail "terraform init of $dir (local backend, moto)"; }
}
