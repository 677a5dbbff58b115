// basalt init: a new appliance directory with a commented appliance.toml and an authorized_keys file.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, join, resolve } from "node:path";
import { imageId } from "../contract/ids.js";
import { DEFINITION_FILE } from "../definition/load.js";
import { UserError } from "../errors.js";

function findUserKey(): string | undefined {
  const dir = join(homedir(), ".ssh");
  if (!existsSync(dir)) return undefined;
  const pub = readdirSync(dir)
    .filter((f) => f.endsWith(".pub"))
    .sort()[0];
  return pub ? readFileSync(join(dir, pub), "utf8").trim() : undefined;
}

export async function initAppliance(dirArg: string, idArg?: string): Promise<{ files: string[] }> {
  const dir = resolve(dirArg);
  const file = join(dir, DEFINITION_FILE);
  if (existsSync(file)) throw new UserError(`${file} already exists`);
  const id =
    idArg ??
    basename(dir)
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, "-")
      .replace(/^[^a-z]+/, "");
  if (!imageId.safeParse(id).success) throw new UserError(`cannot derive an appliance id from "${basename(dir)}"`, "pass one with --id");
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    file,
    `# Basalt appliance definition. Reference: basalt schema --reference
id = "${id}"
version = "1.0"
# release = "trixie"
# packages = ["htop"]

[user]
name = "admin"
authorized_keys = "authorized_keys"

[features]
# ab_updates = true
# encrypted_var = true      # needs a TPM2 on the device
# factory_reset = true
# storage_target = false
# console_info = true
# debug_login = false

# [kernel]
# cmdline = ["quiet"]
`,
  );
  const key = findUserKey();
  writeFileSync(
    join(dir, "authorized_keys"),
    `# SSH public keys allowed to log in as the default user, one per line.\n${key ?? "# (no key found in ~/.ssh: add yours here before building)"}\n`,
  );
  writeFileSync(join(dir, ".gitignore"), "out/\nkeys/\n");
  return { files: [file, join(dir, "authorized_keys"), join(dir, ".gitignore")] };
}
