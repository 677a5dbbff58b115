// Mutual exclusion between Basalt processes on one machine: two builds share mkosi's caches (its
// tools tree, the package cache, an image's incremental cache), which mkosi does not guard as a
// whole. proper-lockfile keeps a lock directory whose mtime its holder refreshes, so a lock left by
// a killed process goes stale and is taken over instead of blocking the machine for good.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import lockfile from "proper-lockfile";

export interface LockOptions {
  /** Called once if the lock is held elsewhere, before waiting for it. */
  onWait?: () => void;
  /** Called if the lock was taken from this process while it held it (its refresh failed). */
  onLost?: (error: Error) => void;
}

/** A holder that stops refreshing for this long (killed, or stopped) loses the lock. */
const STALE_MS = 120_000;
const POLL_MS = 1000;

/** Runs `fn` while holding the lock at `path` (a directory `path`.lock is created), waiting for it as long as it takes. */
export async function withLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  let waited = false;
  let release: () => Promise<void>;
  for (;;) {
    try {
      release = await lockfile.lock(path, {
        realpath: false,
        stale: STALE_MS,
        update: STALE_MS / 6,
        onCompromised: (e) => options.onLost?.(e),
      });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ELOCKED") throw e;
      if (!waited) options.onWait?.();
      waited = true;
      await sleep(POLL_MS);
    }
  }
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}
