import { generateKeyPairSync } from "node:crypto";

/**
 * Credential-shaped samples for the secrets gate's tests, assembled at run time so that no source file
 * holds a credential-shaped literal. Each sample says which rules may report it and which parts of it are
 * the secret (what must never be echoed back).
 */
export interface SecretSample {
  kind: string;
  /** The text as an agent would paste it, on one line (fits a title, a tag and a path). */
  oneLine: string;
  /** The same secret as it sits in a document (a PEM block keeps its lines). */
  block: string;
  /** Any of these rules reporting it is right. */
  rules: readonly string[];
  /** Substrings that are the secret itself: never in an error's message or details. */
  sensitive: readonly string[];
}

const awsSecret = ["9dK2mQ7vX4pL8zR1", "tY6wN3bH5jC0fG2sA7eU4iO1"].join("");
const awsKeyId = ["AKIA", "Z3MQXW4B7KJ5PLRT"].join("");
const githubToken = ["ghp", "_", "Zr8Kq2Lm4Np6Qs8Tu0Vw2Xy4Za6Bc8De0Fg2"].join("");
const slackToken = ["xoxb", "-123456789012-1234567890123-", "AbCdEfGhIjKlMnOpQrStUvWx"].join("");
const rsaPem = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString().trim();
const edPem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString().trim();
/** The base64 lines of a PEM block: the key material. */
const pemLines = (pem: string) => pem.split("\n").filter((line) => !line.startsWith("-----"));

export const SAMPLES: readonly SecretSample[] = [
  {
    kind: "AWS secret access key",
    oneLine: `AWS_SECRET_ACCESS_KEY=${awsSecret}`,
    block: `export AWS_SECRET_ACCESS_KEY=${awsSecret}`,
    rules: ["@secretlint/secretlint-rule-aws"],
    sensitive: [awsSecret, awsSecret.slice(0, 16), awsSecret.slice(-16)],
  },
  {
    kind: "AWS access key id",
    oneLine: awsKeyId,
    block: `the deploy user's key id is ${awsKeyId}`,
    rules: ["memledger/aws-access-key-id"],
    sensitive: [awsKeyId, awsKeyId.slice(4)],
  },
  {
    kind: "GitHub token",
    oneLine: githubToken,
    block: `export GH_TOKEN=${githubToken}`,
    rules: ["@secretlint/secretlint-rule-github"],
    sensitive: [githubToken, githubToken.slice(4, 24), githubToken.slice(-16)],
  },
  {
    kind: "Slack token",
    oneLine: slackToken,
    block: `SLACK_BOT_TOKEN=${slackToken}`,
    rules: ["@secretlint/secretlint-rule-slack"],
    sensitive: [slackToken, slackToken.slice(-24)],
  },
  {
    kind: "private key block",
    // An Ed25519 key is short enough for one line of a title or a path (a tag, at most 64 characters, is not).
    oneLine: edPem.replace(/\n/g, " "),
    block: `deploy key:\n${rsaPem}\n`,
    rules: ["@secretlint/secretlint-rule-privatekey", "memledger/private-key-block"],
    sensitive: [...pemLines(rsaPem), ...pemLines(edPem)].filter((line) => line.length >= 16),
  },
];
