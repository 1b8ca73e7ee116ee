// Signs a GitHub delivery with GitHub's own library, @octokit/webhooks-methods.
// Run by sign.py as `node --input-type=module` from the folder the package
// is installed in; reads {"secret", "body"} on stdin, prints the signature.
import { sign } from "@octokit/webhooks-methods";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secret, body } = JSON.parse(input);
process.stdout.write(await sign(secret, body));
