// Subcommands: each parses its arguments, calls library code and prints the result.
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import pc from "picocolors";
import { buildAppliance } from "../build/build.js";
import { loadAppliance, loadApplianceId } from "../definition/load.js";
import { renderReference } from "../definition/reference.js";
import { renderJsonSchema } from "../definition/schema.js";
import { createPlan, planDir, renderTree, writePlan } from "../generator/plan.js";
import { initAppliance } from "../init/init.js";
import { inspectImage, renderInspectReport } from "../inspect/inspect.js";
import { completeKeySet, createKeySet, keySetInfo, keysDir, loadKeySet } from "../keys/keys.js";
import { createRelease } from "../release/release.js";
import { createReporter, runReported } from "../report/reporter.js";
import { renderDoctor, runDoctor } from "../toolchain/doctor.js";
import { registerFleetCommands } from "./fleet-commands.js";
import { registerServerCommands } from "./server-commands.js";
import { registerVmCommands } from "./vm-commands.js";

const json = (v: unknown) => process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);

export function registerCommands(program: CommandUnknownOpts): void {
  program
    .command("init")
    .argument("<dir>", "directory to create the appliance in")
    .option("--id <id>", "appliance id (default: the directory name)")
    .description("scaffold an appliance definition")
    .action(async (dir, o) => {
      const result = await initAppliance(dir, o.id);
      process.stdout.write(`created ${result.files.join(", ")}\nnext: ./basalt build ${dir}\n`);
    });

  program
    .command("plan")
    .argument("<dir>", "appliance directory (or its appliance.toml)")
    .option("--json", "print the plan as JSON")
    .description("write the generated mkosi tree to DIR/out/plan without building")
    .action((dir, o) => {
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
    .action(async (dir, o) => {
      const reporter = createReporter();
      const r = await runReported(reporter, () => buildAppliance(dir, { reporter }));
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
    });

  program
    .command("inspect")
    .argument("<image>", "a disk image built by Basalt")
    .option("--json", "print the report as JSON")
    .option("--deep", "also rebuild the verity hash tree from the root partition (reads all of it)")
    .description("show partitions, UKI command line, os-release and profiles; check the root hash")
    .action(async (image, o) => {
      const reporter = createReporter({ quiet: Boolean(o.json) });
      // The deep check reads the whole root partition: a phase, with progress at most once a second.
      let shown: number | undefined;
      const report = await runReported(reporter, () =>
        inspectImage(image, {
          deep: Boolean(o.deep),
          onProgress: ({ bytesDone, bytesTotal }) => {
            if (shown === undefined) reporter.phase(`re-hashing the root partition, ${(bytesTotal / 1048576).toFixed(0)} MiB`);
            else if (performance.now() - shown < 1000 || bytesDone === bytesTotal) return;
            else reporter.step(`${((100 * bytesDone) / bytesTotal).toFixed(0)} % (${(bytesDone / 1048576).toFixed(0)} MiB)`);
            shown = performance.now();
          },
        }),
      );
      if (o.json) json(report);
      else process.stdout.write(renderInspectReport(report));
      if (!report.ok) process.exitCode = 1;
    });

  program
    .command("doctor")
    .option("--json", "print the report as JSON")
    .option("--fix", "provision what is missing (mkosi, tools tree)")
    .description("report the toolchain Basalt uses (mkosi, tools tree, cache)")
    .action(async (o) => {
      const report = await runReported(createReporter({ quiet: Boolean(o.json) }), (reporter) => runDoctor({ fix: Boolean(o.fix), reporter }));
      if (o.json) json(report);
      else process.stdout.write(renderDoctor(report));
      if (!report.ok) process.exitCode = 1;
    });

  const keys = program.command("keys").description("manage an appliance's keys");
  keys
    .command("init")
    .argument("<dir>", "appliance directory; keys go to DIR/keys/")
    .option("--force", "replace an existing (non-development) key set")
    .option("--dev", "mark the keys as development keys")
    .description("create the verity and Secure Boot db keys and certificates, the update signing key and the login key (0600, git-ignored)")
    .action(async (dir, o) => {
      // The id alone: the definition may authorize the login key this is about to make.
      const { dir: applianceDir, id } = loadApplianceId(dir);
      const target = keysDir(applianceDir);
      const before = keySetInfo(target);
      if (before && !before.dev && !o.force) {
        // A real set made by an older Basalt is completed; otherwise createKeySet refuses to replace it.
        const existing = loadKeySet(target);
        const added = existing ? await completeKeySet(existing, id) : [];
        if (added.length) {
          process.stdout.write(`completed the key set in ${target}: added ${added.join(" and ")}\n`);
          return;
        }
      }
      const set = await createKeySet(target, { dev: Boolean(o.dev), commonName: id, force: Boolean(o.force) });
      if (before?.dev) process.stdout.write(`replaced the development key set in ${target} (development keys are replaced without --force)\n`);
      process.stdout.write(
        [
          `created ${set.dev ? "development " : ""}keys in ${target}:`,
          ...[
            set.verity.key,
            set.verity.certificate,
            set.db.key,
            set.db.certificate,
            set.update.key,
            set.update.publicKey,
            set.login.key,
            set.login.publicKey,
          ].map((f) => `  ${f}`),
          "keep the private keys secret: they are git-ignored and never enter the image",
          `log in to the appliance's VMs with ${set.login.key} where its definition authorizes it (authorized_keys = "keys/login_ed25519.pub")`,
          "",
        ].join("\n"),
      );
    });

  program
    .command("release")
    .argument("<dir>", "appliance directory; releases the version its definition names")
    .option("--allow-dev", "release an image signed with development keys (for tests only)")
    .option("--json", "print the release manifest as JSON")
    .description("turn a build into an update release: xz partitions, UKI, signed SHA256SUMS (DIR/out/releases/<version>/)")
    .action(async (dir, o) => {
      const reporter = createReporter({ quiet: Boolean(o.json) });
      const r = await runReported(reporter, () => {
        reporter.phase("Release");
        return createRelease(dir, { reporter, allowDev: Boolean(o.allowDev) });
      });
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
    .action((o) => {
      process.stdout.write(o.reference ? renderReference() : renderJsonSchema());
    });
}
