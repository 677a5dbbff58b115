// Subcommands: each parses its arguments, calls library code and prints the result.
import type { Command } from "commander";
import pc from "picocolors";
import { buildAppliance } from "../build/build.js";
import { loadAppliance } from "../definition/load.js";
import { renderReference } from "../definition/reference.js";
import { renderJsonSchema } from "../definition/schema.js";
import { createPlan, planDir, renderTree, writePlan } from "../generator/plan.js";
import { initAppliance } from "../init/init.js";
import { inspectImage, renderInspectReport } from "../inspect/inspect.js";
import { createKeySet, ensureUpdateKeyIn, keysDir, loadKeySet } from "../keys/keys.js";
import { createRelease } from "../release/release.js";
import { createReporter } from "../report/reporter.js";
import { renderDoctor, runDoctor } from "../toolchain/doctor.js";
import { registerFleetCommands } from "./fleet-commands.js";
import { registerServerCommands } from "./server-commands.js";
import { registerVmCommands } from "./vm-commands.js";

const json = (v: unknown) => process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);

export function registerCommands(program: Command): void {
  program
    .command("init")
    .argument("<dir>", "directory to create the appliance in")
    .option("--id <id>", "appliance id (default: the directory name)")
    .description("scaffold an appliance definition")
    .action(async (dir: string, o: { id?: string }) => {
      const result = await initAppliance(dir, o.id);
      process.stdout.write(`created ${result.files.join(", ")}\nnext: ./basalt build ${dir}\n`);
    });

  program
    .command("plan")
    .argument("<dir>", "appliance directory (or its appliance.toml)")
    .option("--json", "print the plan as JSON")
    .description("write the generated mkosi tree to DIR/out/plan without building")
    .action((dir: string, o: { json?: boolean }) => {
      const loaded = loadAppliance(dir);
      const entries = renderTree(loaded);
      const plan = createPlan(loaded, entries);
      const target = planDir(loaded.context.dir);
      writePlan(target, entries, plan);
      if (o.json) json({ ...plan, path: target });
      else process.stdout.write(`plan for ${plan.id} ${plan.version}: ${entries.size} files in ${target}/mkosi\n`);
    });

  program
    .command("build")
    .argument("<dir>", "appliance directory (or its appliance.toml)")
    .option("--json", "print the build result as JSON on stdout")
    .description("build the appliance image (plan, then mkosi) into DIR/out/<version>/")
    .action(async (dir: string, o: { json?: boolean }) => {
      const reporter = createReporter();
      try {
        const r = await buildAppliance(dir, { reporter });
        const total = reporter.timings.reduce((s, t) => s + t.seconds, 0);
        if (o.json) {
          json({ ...r, timings: reporter.timings });
          return;
        }
        const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
        process.stdout.write(
          `\n${pc.green("built")} ${r.manifest.id} ${r.manifest.version} in ${total.toFixed(0)} s${r.manifest.devSigned ? pc.yellow(" (dev-signed)") : ""}\n`,
        );
        process.stdout.write(`  image:    ${r.image}\n  roothash: ${r.manifest.roothash}\n`);
        for (const a of r.manifest.artifacts) process.stdout.write(`  ${a.kind.padEnd(16)} ${mb(a.size).padStart(10)}  ${a.name}\n`);
      } catch (e) {
        reporter.fail();
        throw e;
      }
    });

  program
    .command("inspect")
    .argument("<image>", "a disk image built by Basalt")
    .option("--json", "print the report as JSON")
    .option("--deep", "also rebuild the verity hash tree from the root partition (reads all of it)")
    .description("show partitions, UKI command line, os-release and profiles; check the root hash")
    .action((image: string, o: { json?: boolean; deep?: boolean }) => {
      const report = inspectImage(image, { deep: Boolean(o.deep) });
      if (o.json) json(report);
      else process.stdout.write(renderInspectReport(report));
      if (!report.ok) process.exitCode = 1;
    });

  program
    .command("doctor")
    .option("--json", "print the report as JSON")
    .option("--fix", "provision what is missing (mkosi, tools tree)")
    .description("report the toolchain Basalt uses (mkosi, tools tree, cache)")
    .action(async (o: { json?: boolean; fix?: boolean }) => {
      const report = await runDoctor({ fix: Boolean(o.fix), reporter: createReporter({ quiet: Boolean(o.json) }) });
      if (o.json) json(report);
      else process.stdout.write(renderDoctor(report));
      if (!report.ok) process.exitCode = 1;
    });

  const keys = program.command("keys").description("manage an appliance's signing keys");
  keys
    .command("init")
    .argument("<dir>", "appliance directory; keys go to DIR/keys/")
    .option("--force", "replace an existing key set")
    .option("--dev", "mark the keys as development keys")
    .description("create the verity and Secure Boot db keys and certificates (0600, git-ignored)")
    .action(async (dir: string, o: { force?: boolean; dev?: boolean }) => {
      const loaded = loadAppliance(dir);
      const target = keysDir(loaded.context.dir);
      const existing = loadKeySet(target);
      if (existing && !o.force && (await ensureUpdateKeyIn(existing, loaded.appliance.id))) {
        process.stdout.write(`added the update signing key to ${target}:\n  ${existing.update.key}\n  ${existing.update.publicKey}\n`);
        return;
      }
      const set = await createKeySet(target, { dev: Boolean(o.dev), commonName: loaded.appliance.id, force: Boolean(o.force) });
      process.stdout.write(
        `created ${set.dev ? "development " : ""}keys in ${target}:\n  ${set.verity.key}\n  ${set.verity.certificate}\n  ${set.db.key}\n  ${set.db.certificate}\n  ${set.update.key}\n  ${set.update.publicKey}\nkeep the .key files secret: they are git-ignored and never enter the image\n`,
      );
    });

  program
    .command("release")
    .argument("<dir>", "appliance directory; releases the version its definition names")
    .option("--allow-dev", "release an image signed with development keys (for tests only)")
    .option("--json", "print the release manifest as JSON")
    .description("turn a build into an update release: xz partitions, UKI, signed SHA256SUMS (DIR/out/releases/<version>/)")
    .action(async (dir: string, o: { allowDev?: boolean; json?: boolean }) => {
      const reporter = createReporter({ quiet: Boolean(o.json) });
      reporter.phase("Release");
      const r = await createRelease(dir, { reporter, allowDev: Boolean(o.allowDev) });
      reporter.done();
      if (o.json) {
        json({ ...r.manifest, path: r.dir });
        return;
      }
      process.stdout.write(`${pc.green("released")} ${r.manifest.id} ${r.manifest.version} in ${r.dir} (index signed by ${r.manifest.signingKey})\n`);
      for (const f of r.manifest.files) process.stdout.write(`  ${f.kind.padEnd(16)} ${(f.size / 1e6).toFixed(1).padStart(8)} MB  ${f.name}\n`);
    });

  registerServerCommands(program);
  registerFleetCommands(program);
  registerVmCommands(program);

  program
    .command("schema")
    .option("--reference", "print the Markdown key reference instead of the JSON Schema")
    .description("print the JSON Schema of appliance.toml (for editors) or the key reference")
    .action((o: { reference?: boolean }) => {
      process.stdout.write(o.reference ? renderReference() : renderJsonSchema());
    });
}
