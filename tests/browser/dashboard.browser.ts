// The dashboard in a real headless Chromium against a real basalt serve: 40 simulated devices on
// 1.0 poll, download, reboot and report over HTTP while an operator signs in, reads the fleet,
// pauses, resumes and raises the 2.0 rollout with the forms, and watches the live chart catch up
// with the devices that update afterwards (without reloading the page). Screenshots are taken on
// the way (into docs/screenshots/ with UPDATE_SCREENSHOTS=1: `npm run screenshots`).
//
// The fleet's clock runs some minutes behind real time and catches up in jumps: devices keep the
// index they were shown for two minutes, so the devices can only see the raised rollout once that
// much fleet time has passed, and the paused span gets a visible width on the chart.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { rolloutBucket } from "../../src/fleet/rollout.js";
import { hashPassword } from "../../src/server/auth.js";
import { startTestServer, type TestServer } from "../support/fleet-server.js";
import { SimulatedDevice } from "../support/simulated-device.js";

// docs/screenshots/ only on `npm run screenshots`; a test run leaves the documentation alone.
const SHOTS =
  process.env.UPDATE_SCREENSHOTS === "1" ? fileURLToPath(new URL("../../docs/screenshots/", import.meta.url)) : mkdtempSync(join(tmpdir(), "basalt-shots-"));
const PASSWORD = "correct horse battery staple";
const DEVICES = 40;

let lag = 5 * 60_000;
const now = () => Date.now() - lag;

let server: TestServer;
let browser: Browser;
let page: Page;
const started = performance.now();
const step = (what: string) => console.log(`[browser] ${((performance.now() - started) / 1000).toFixed(1)} s  ${what}`);

beforeAll(async () => {
  server = await startTestServer({ now, auth: { operators: [{ name: "alice", hash: hashPassword(PASSWORD) }] } });
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    // No network on the test machines: without these Chromium waits on Google's services.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  mkdirSync(SHOTS, { recursive: true });
  step("server and browser up");
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

const shoot = (name: string) => page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`), fullPage: true });
const chart = async () =>
  page.locator("svg.chart").evaluate((svg) => ({
    offered: Number(svg.getAttribute("data-offered")),
    paused: svg.getAttribute("data-paused") === "true",
    downloaded: Number(svg.getAttribute("data-downloaded")),
    running: Number(svg.getAttribute("data-running")),
    failed: Number(svg.getAttribute("data-failed")),
    population: Number(svg.getAttribute("data-population")),
  }));
const pct = (n: number) => Math.round((n / DEVICES) * 100);

it("shows the fleet, changes a rollout with its forms and follows the devices live", async () => {
  await server.publish("demo", "stable", "1.0");
  // Failures count only once 10 devices took 2.0, so the two early failures do not pause it.
  await server.publish("demo", "stable", "2.0", { percent: 10, minDevices: 10 });
  // Fixed machine-ids: the same devices are in the 10 % and 50 % cohorts on every run.
  const fleet = Array.from({ length: DEVICES }, (_, i) => {
    const machine = createHash("sha256").update(`dash-${i}`).digest("hex").slice(0, 32);
    return new SimulatedDevice({ server: server.url, image: "demo", channel: "stable", version: "1.0", machine, token: server.tokenFor("demo", machine) });
  });
  const inCohort = (d: SimulatedDevice, percent: number) => rolloutBucket("demo", "2.0", d.machine) < percent;
  const early = fleet.filter((d) => inCohort(d, 10));
  expect(early.length).toBeGreaterThanOrEqual(3);
  const [rolledBack, unhealthy] = early as [SimulatedDevice, SimulatedDevice];
  const sick = fleet.find((d) => !inCohort(d, 50)) as SimulatedDevice;

  // Round 1: everyone checks in on 1.0; the 10 % update, one falls back to 1.0, one boots 2.0 unhealthy.
  await Promise.all(
    fleet.map(async (d) => {
      if (!(await d.update())) {
        await d.report("boot", d === sick ? { healthy: false, reason: "var filling up: 97% used" } : {});
        return;
      }
      if (d === rolledBack) {
        d.reboot({ healthy: false });
        await d.poll();
        await d.report("boot", { entries: ["demo_2.0+0-3.efi", "demo_1.0.efi"] });
      } else {
        d.reboot();
        await d.poll();
        await d.report(d === unhealthy ? "unhealthy" : "boot", d === unhealthy ? { reason: "<script>alert('app')</script> did not answer on :8080" } : {});
      }
    }),
  );
  expect(fleet.filter((d) => d.version === "2.0")).toHaveLength(early.length - 1);
  step(`round 1: ${early.length} of ${DEVICES} devices offered 2.0`);

  // Sign in: a wrong password first, then alice's.
  await page.goto(`${server.url}/`);
  expect(new URL(page.url()).pathname).toBe("/ui/login");
  await shoot("login");
  await page.fill("input[name=name]", "alice");
  await page.fill("input[name=password]", "not her password");
  await page.click("button[type=submit]");
  await expect.poll(() => page.locator(".flash.error").textContent()).toContain("Wrong name or password");
  await page.fill("input[name=password]", PASSWORD);
  await Promise.all([page.waitForURL(`${server.url}/ui/`), page.click("button[type=submit]")]);
  expect(await page.locator(".operator").textContent()).toBe("alice");
  const row = page.locator('section.channel[data-channel="stable"] tr.rollout[data-version="2.0"]');
  expect(await row.textContent()).toContain("10%");
  expect(await page.locator('section.image-summary[data-image="demo"] .stats').textContent()).toMatch(/devices\s*40/);
  await shoot("overview");
  step("signed in, overview");

  await page.click("header nav >> text=Devices");
  await page.waitForURL(`${server.url}/ui/devices`);
  expect(await page.locator(".device-count").textContent()).toBe(`${DEVICES} devices`);
  expect(await page.locator("table.devices tr.device").count()).toBe(DEVICES);
  await shoot("devices");
  await page.selectOption("select[name=health]", "unhealthy");
  await Promise.all([page.waitForURL(/health=unhealthy/), page.click("form.filters button[type=submit]")]);
  expect(await page.locator(".device-count").textContent()).toBe("2 devices");

  await page.click(`a[href="/ui/devices/demo/${unhealthy.machine}"]`);
  await page.waitForURL(`${server.url}/ui/devices/demo/${unhealthy.machine}`);
  // The device's own words, shown as text: nothing it sends runs in the operator's browser.
  expect(await page.locator(".last-report .reason").textContent()).toBe("<script>alert('app')</script> did not answer on :8080");
  expect(await page.locator(".last-report").textContent()).toContain("basalt-health.service");
  await shoot("device");
  step("devices and a device");

  await page.goto(`${server.url}/ui/`);
  await Promise.all([page.waitForURL(/\/ui\/rollouts\/demo\/stable\/2\.0$/), row.locator("a").first().click()]);
  expect(await chart()).toEqual({
    offered: 10,
    paused: false,
    downloaded: pct(early.length),
    running: pct(early.length - 1),
    failed: pct(2),
    population: DEVICES,
  });

  // Pause while looking at the failures for a minute of fleet time, resume, raise to 50 % two minutes later.
  await page.fill("form.pause input[name=reason]", "looking at the rollback");
  await Promise.all([page.waitForLoadState("load"), page.click("form.pause button")]);
  await expect.poll(() => page.locator(".flash.ok").textContent()).toContain("paused");
  expect((await chart()).paused).toBe(true);
  lag = 4 * 60_000;
  await page.click("form.resume button");
  await expect.poll(() => page.locator(".flash.ok").textContent()).toContain("resumed");
  lag = 2 * 60_000;
  await page.fill("form.set-percent input[name=percent]", "50");
  await page.click("form.set-percent button");
  await expect.poll(() => page.locator(".flash.ok").textContent()).toContain("offered to 50%");
  const before = await chart();
  expect(before).toMatchObject({ offered: 50, paused: false, running: pct(early.length - 1) });
  expect(await page.locator("table.changes tbody tr").count()).toBe(4);
  step("paused, resumed, raised to 50 % with the forms");

  // Round 2, while the page stays open: the newly offered devices update, reboot and report.
  await page.evaluate(() => {
    (window as unknown as { notReloaded: boolean }).notReloaded = true;
  });
  const late = fleet.filter((d) => inCohort(d, 50) && !inCohort(d, 10));
  expect(late.length).toBeGreaterThan(0);
  lag = 0;
  await Promise.all(
    fleet.map(async (d) => {
      // A version the boot loader gave up on is never installed again.
      if (d === rolledBack) await d.poll();
      else if (await d.update()) {
        d.reboot();
        await d.poll();
        await d.report("boot");
      }
    }),
  );
  expect(fleet.filter((d) => d.version === "2.0")).toHaveLength(early.length - 1 + late.length);
  step(`round 2: ${late.length} more devices updated`);

  const expectedRunning = pct(early.length - 1 + late.length);
  await page.waitForFunction((n) => Number(document.querySelector("svg.chart")?.getAttribute("data-running")) === n, expectedRunning, { timeout: 15_000 });
  expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
  const after = await chart();
  expect(after.running).toBeGreaterThan(before.running);
  expect(after).toMatchObject({ offered: 50, downloaded: pct(early.length + late.length), failed: pct(2) });
  await shoot("rollout");
  step(`chart refreshed by itself: running ${before.running}% → ${after.running}%`);
});
