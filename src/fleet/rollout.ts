// Which version a device is offered. Devices are placed in a rollout by a hash of the release and
// their machine-id, so the choice is the same on every request (the client fetches the index and
// its signature at once), on every server replica, and only grows as the percentage is raised.
// A device's view is the offered release's own signed index, which lists only that release: a
// device only ever moves forward, so older releases need not be listed.
import { createHash } from "node:crypto";
import { compareVersions } from "../contract/version.js";

/** The device's place in a release's rollout, in [0, 100): it is in while this is below the percentage. */
export function rolloutBucket(image: string, version: string, machine: string): number {
  const h = createHash("sha256").update(`basalt-rollout\0${image}\0${version}\0${machine}`).digest();
  return (h.readUInt32BE(0) / 2 ** 32) * 100;
}

export interface RolloutState {
  version: string;
  percent: number;
  paused: boolean;
}

export function includes(r: RolloutState, image: string, machine: string): boolean {
  return !r.paused && r.percent > 0 && (r.percent >= 100 || rolloutBucket(image, r.version, machine) < r.percent);
}

/** The newest release of a channel whose rollout includes the device, if any. */
export function offeredRelease<T extends RolloutState>(releases: readonly T[], image: string, machine: string): T | undefined {
  let best: T | undefined;
  for (const r of releases) {
    if ((!best || compareVersions(r.version, best.version) > 0) && includes(r, image, machine)) best = r;
  }
  return best;
}

/** A rollout that raises itself: `steps` percentages, one every `stepSeconds`. */
export interface RolloutSchedule {
  steps: number[];
  stepSeconds: number;
}

/** The step after `percent`, or undefined when the schedule is done. */
export function nextStep(schedule: RolloutSchedule, percent: number): number | undefined {
  return schedule.steps.find((s) => s > percent);
}

/** Whether the failures among a release's adopters call for an automatic pause. */
export function shouldPause(policy: { maxFailureRate: number; minDevices: number }, adopters: number, failures: number): boolean {
  return adopters >= policy.minDevices && adopters > 0 && failures / adopters > policy.maxFailureRate;
}
