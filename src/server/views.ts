// The JSON shapes the API answers with, apart from the database's own records.
import { compareVersions } from "../contract/version.js";
import type { ChannelRecord } from "../fleet/db/fleet-db.js";

export interface ChannelView {
  id: string;
  channel: string;
  /** Versions on the channel, oldest first. */
  versions: string[];
  rollouts: { version: string; percent: number; paused: boolean; pauseReason: string | null; nextStepAt: number | null }[];
  updatedAt: string;
}

export function channelView(c: ChannelRecord): ChannelView {
  const rollouts = [...c.rollouts].sort((a, b) => compareVersions(a.version, b.version));
  return {
    id: c.image,
    channel: c.channel,
    versions: rollouts.map((r) => r.version),
    rollouts: rollouts.map((r) => ({ version: r.version, percent: r.percent, paused: r.paused, pauseReason: r.pauseReason, nextStepAt: r.nextStepAt })),
    updatedAt: new Date(c.updatedAt).toISOString(),
  };
}
