"""The secure-access diagram (docs/secure-access.png), drawn with the `diagrams` package
and graphviz. `make diagram` renders it; scripts/deploy/check_diagram.py imports COMPONENTS
and FLOWS and compares them with the code and the Terraform, so the picture cannot drift
from what is deployed.

Run: python docs/diagram/secure_access.py OUTPUT_WITHOUT_EXTENSION
"""
import sys

# Components: name on the picture -> what it is and the ports it listens on. Names are the
# ECS service names, ports are the ones in the code, the Dockerfiles and the Terraform.
COMPONENTS = {
    "nlb": {"label": "internal NLB", "ports": [5432]},
    "proxy": {"label": "proxy (ECS Fargate, 3+ tasks)", "ports": [6432, 9187, 6433]},
    "alb": {"label": "internal ALB (HTTPS)", "ports": [443]},
    "approvals": {"label": "approvals (ECS Fargate)", "ports": [8080]},
    "rates-api": {"label": "rates-api (ECS Fargate)", "ports": [3000]},
    "rds": {"label": "RDS PostgreSQL\n(pgaudit, IAM auth, KMS)", "ports": [5432]},
    "rotation": {"label": "rotation Lambda (arm64)\nevery 30 days", "ports": []},
    "secrets": {"label": "Secrets Manager", "ports": []},
    "audit-shipper": {"label": "audit shipper\n(sidecar)", "ports": []},
    "audit-bucket": {"label": "S3 Object Lock\n(compliance) + Glacier", "ports": []},
    "cloudwatch": {"label": "CloudWatch\nlogs, alarms", "ports": []},
    "idp": {"label": "company SSO\n(OpenID Connect)", "ports": []},
    "person": {"label": "person\n(dbgw psql, any client)", "ports": []},
    "approver": {"label": "data-security approver", "ports": []},
}

# Flows: (from, to, port or None, what). The numbers on the arrows are the flows in
# docs/secure-access.md. Every flow between two security groups has a rule in Terraform.
FLOWS = [
    ("person", "idp", None, "1 sign in (PKCE)"),
    ("person", "alb", 443, "2 request access"),
    ("approver", "alb", 443, "3 approve"),
    ("alb", "approvals", 8080, "HTTP"),
    ("approvals", "rds", 5432, "4 role, grant, membership"),
    ("approvals", "secrets", None, "4 person's password"),
    ("person", "nlb", 5432, "5 psql, ID token as password (TLS)"),
    ("nlb", "proxy", 6432, "TLS passthrough"),
    ("proxy", "idp", None, "JWKS"),
    ("proxy", "secrets", None, "logins (cached)"),
    ("proxy", "rds", 5432, "6 as the person's own role (TLS)"),
    ("alb", "rates-api", 3000, "HTTP"),
    ("rates-api", "nlb", 5432, "7 app query (service login)"),
    ("rotation", "secrets", None, "8 four steps"),
    ("rotation", "rds", 5432, "8 ALTER ROLE"),
    ("proxy", "audit-shipper", None, "audit files, head.json"),
    ("audit-shipper", "audit-bucket", None, "put, never delete"),
    ("rds", "cloudwatch", None, "pgaudit log"),
    ("proxy", "cloudwatch", None, "metrics, logs"),
]


def label(name):
    c = COMPONENTS[name]
    ports = ", ".join(f":{p}" for p in c["ports"])
    return c["label"] + (f"\n{ports}" if ports else "")


def render(out):
    import uuid

    # diagrams names graphviz nodes with random ids; fixed ids keep the image reproducible.
    counter = iter(range(1, 10_000))
    uuid.uuid4 = lambda: uuid.UUID(int=next(counter))

    from diagrams import Cluster, Diagram, Edge
    from diagrams.aws.compute import ECS, Lambda
    from diagrams.aws.database import RDSPostgresqlInstance
    from diagrams.aws.management import Cloudwatch
    from diagrams.aws.network import ALB, NLB
    from diagrams.aws.security import SecretsManager, SingleSignOn
    from diagrams.aws.storage import S3Glacier
    from diagrams.onprem.client import User, Users

    graph = {"fontsize": "20", "pad": "0.4", "splines": "spline", "nodesep": "0.7", "ranksep": "1.1"}
    with Diagram("dbgw: secure database access on AWS", filename=out, outformat="png",
                 show=False, direction="LR", graph_attr=graph):
        nodes = {
            "person": User(label("person")),
            "approver": Users(label("approver")),
            "idp": SingleSignOn(label("idp")),
        }
        with Cluster("AWS account, VPC (private subnets in 3 AZs, VPC endpoints)"):
            nodes["nlb"] = NLB(label("nlb"))
            nodes["alb"] = ALB(label("alb"))
            with Cluster("ECS cluster"):
                with Cluster("proxy task"):
                    nodes["proxy"] = ECS(label("proxy"))
                    nodes["audit-shipper"] = ECS(label("audit-shipper"))
                nodes["approvals"] = ECS(label("approvals"))
                nodes["rates-api"] = ECS(label("rates-api"))
            nodes["rds"] = RDSPostgresqlInstance(label("rds"))
            nodes["rotation"] = Lambda(label("rotation"))
            nodes["secrets"] = SecretsManager(label("secrets"))
            nodes["audit-bucket"] = S3Glacier(label("audit-bucket"))
            nodes["cloudwatch"] = Cloudwatch(label("cloudwatch"))
        for src, dst, port, what in FLOWS:
            text = what + (f" :{port}" if port else "")
            nodes[src] >> Edge(label=text, fontsize="11") >> nodes[dst]


if __name__ == "__main__":
    render(sys.argv[1] if len(sys.argv) > 1 else "docs/secure-access")
