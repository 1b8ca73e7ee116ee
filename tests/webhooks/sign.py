"""Signs webhook deliveries the way each provider does, with the provider's
own library, for aforo's end-to-end tests.

Reads one JSON request on stdin and prints one JSON answer:

    {"provider": "stripe", "secret": "...", "body": "...", "url": "...",
     "timestamp": 1700000000, "id": "evt_1", "form": {"k": "v"}}
 -> {"headers": [[name, value], ...], "body": "...", "url": "..."}

Which library signs what:

- stripe: stripe-python, stripe.WebhookSignature.generate_signature_header
  (the SDK's helper "for signing payloads in unit tests").
- github: @octokit/webhooks-methods sign() (GitHub's JavaScript library),
  through node; see sign-github.mjs.
- slack: slack_sdk.signature.SignatureVerifier.generate_signature.
- twilio: twilio.request_validator.RequestValidator.compute_signature (and
  compute_hash for a JSON body's bodySHA256 parameter).
- standard: standardwebhooks.Webhook.sign (the Standard Webhooks reference
  library; Svix's is the same algorithm).
- sendgrid: sendgrid's EventWebhook helper only verifies, so the delivery is
  signed as SendGrid documents it (ECDSA P-256 / SHA-256 over timestamp +
  body, base64 DER) with `cryptography`, and then checked with
  sendgrid.helpers.eventwebhook.EventWebhook.verify_signature before it is
  printed. `{"provider": "sendgrid-keygen"}` makes the key pair: the public
  key (base64 DER, as SendGrid's Mail Settings show it) is the source's secret.
"""

import base64
import datetime
import json
import os
import subprocess
import sys
import urllib.parse


def stripe_sign(req):
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(
        req["body"], req["secret"], timestamp=req["timestamp"]
    )
    return [["content-type", "application/json"], ["stripe-signature", header]], req["url"]


def github_sign(req):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "sign-github.mjs")) as f:
        script = f.read()
    prefix = os.environ["AFORO_WEBHOOK_NODE_PREFIX"]
    # The script comes in as --eval so that its import resolves from the
    # folder the package is installed in (the working directory).
    out = subprocess.run(
        ["node", "--input-type=module", "--eval", script],
        input=json.dumps({"secret": req["secret"], "body": req["body"]}).encode(),
        cwd=prefix,
        capture_output=True,
        check=True,
    )
    signature = out.stdout.decode()
    return [
        ["content-type", "application/json"],
        ["x-github-event", "push"],
        ["x-github-delivery", req["id"]],
        ["x-hub-signature-256", signature],
    ], req["url"]


def slack_sign(req):
    from slack_sdk.signature import SignatureVerifier

    ts = str(req["timestamp"])
    signature = SignatureVerifier(req["secret"]).generate_signature(timestamp=ts, body=req["body"])
    content_type = "application/x-www-form-urlencoded" if req.get("form") else "application/json"
    return [
        ["content-type", content_type],
        ["x-slack-request-timestamp", ts],
        ["x-slack-signature", signature],
    ], req["url"]


def twilio_sign(req):
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(req["secret"])
    url = req["url"]
    if req.get("form") is not None:
        params = req["form"]
        content_type = "application/x-www-form-urlencoded"
    else:
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}bodySHA256={validator.compute_hash(req['body'])}"
        params = {}
        content_type = "application/json"
    signature = validator.compute_signature(url, params)
    headers = [["content-type", content_type], ["x-twilio-signature", signature]]
    if req.get("id"):
        headers.append(["i-twilio-idempotency-token", req["id"]])
    return headers, url


def standard_sign(req):
    from standardwebhooks import Webhook

    at = datetime.datetime.fromtimestamp(req["timestamp"], tz=datetime.timezone.utc)
    signature = Webhook(req["secret"]).sign(req["id"], at, req["body"])
    return [
        ["content-type", "application/json"],
        ["webhook-id", req["id"]],
        ["webhook-timestamp", str(req["timestamp"])],
        ["webhook-signature", signature],
    ], req["url"]


def sendgrid_keygen():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"private_pem": private_pem, "public_key": base64.b64encode(public_der).decode()}


def sendgrid_sign(req):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from sendgrid.helpers.eventwebhook import EventWebhook

    key = serialization.load_pem_private_key(req["secret"].encode(), password=None)
    ts = str(req["timestamp"])
    der = key.sign((ts + req["body"]).encode(), ec.ECDSA(hashes.SHA256()))
    signature = base64.b64encode(der).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    checker = EventWebhook(base64.b64encode(public_der).decode())
    if not checker.verify_signature(req["body"], signature, ts):
        sys.exit("sendgrid's EventWebhook helper does not accept the signature")
    return [
        ["content-type", "application/json"],
        ["x-twilio-email-event-webhook-signature", signature],
        ["x-twilio-email-event-webhook-timestamp", ts],
    ], req["url"]


SIGNERS = {
    "stripe": stripe_sign,
    "github": github_sign,
    "slack": slack_sign,
    "twilio": twilio_sign,
    "standard": standard_sign,
    "sendgrid": sendgrid_sign,
}


def main():
    req = json.load(sys.stdin)
    provider = req["provider"]
    if provider == "sendgrid-keygen":
        json.dump(sendgrid_keygen(), sys.stdout)
        return
    if req.get("form") is not None:
        req["body"] = urllib.parse.urlencode(req["form"])
    headers, url = SIGNERS[provider](req)
    json.dump({"headers": headers, "body": req["body"], "url": url}, sys.stdout)


if __name__ == "__main__":
    main()
