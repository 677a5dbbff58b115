// Waiting on a guest, written once: poll a probe until it yields, or watch that something never
// happens over a whole window. A timeout names what was awaited and what the probe saw last.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface PollOptions {
  timeoutMs: number;
  /** Time between tries (default 2 s). */
  intervalMs?: number;
}

/**
 * Calls `probe` until it returns a value other than undefined, and returns that. A probe that
 * throws counts as "not yet" (a guest rebooting refuses SSH for a while); its error is reported if
 * the time runs out.
 */
export async function poll<T>(what: string, probe: () => Promise<T | undefined>, o: PollOptions): Promise<T> {
  const deadline = Date.now() + o.timeoutMs;
  let last = "";
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
      last = "not yet";
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${Math.round(o.timeoutMs / 1000)} s waiting for ${what} (last: ${last})`);
    await sleep(o.intervalMs ?? 2000);
  }
}

/**
 * Asserts that `happened` stays false for the whole of `windowMs`, looking every `intervalMs`: what
 * "never comes up" means, observed rather than assumed from one look.
 */
export async function never(what: string, happened: () => Promise<boolean>, o: { windowMs: number; intervalMs?: number }): Promise<void> {
  const end = Date.now() + o.windowMs;
  while (Date.now() < end) {
    if (await happened().catch(() => false)) throw new Error(`${what} happened, within ${Math.round(o.windowMs / 1000)} s`);
    await sleep(o.intervalMs ?? 5000);
  }
}
