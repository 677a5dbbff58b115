// How a release is offered on a channel: the options an operator gives (`basalt publish`,
// `basalt fleet rollout`, the dashboard, the API), checked by one schema wherever they come from.
import { z } from "zod";

const share = "expected a percentage from 0 to 100";
const percent = z.number().min(0, share).max(100, share);

export const rolloutOptionsSchema = z.strictObject({
  /** Share of the channel's devices offered the release, 0–100 (default 100, or the first step). */
  percent: percent.optional(),
  /** A schedule: the percentages to go through, one every `stepSeconds` (an empty list removes it). */
  steps: z.array(percent.positive("expected rising percentages above 0, e.g. 10,50,100")).max(100).optional(),
  stepSeconds: z
    .number()
    .int("expected whole seconds")
    .min(1, "expected at least one second")
    .max(366 * 86400, "expected at most a year")
    .optional(),
  /** Pause automatically when more than this share of the devices that took it failed (default 0.2). */
  maxFailureRate: z.number().min(0, "expected a share from 0 to 1").max(1, "expected a share from 0 to 1").optional(),
  /** …counted only once this many devices took it (default 3). */
  minDevices: z.number().int("expected a whole number").min(1, "expected at least 1").max(1_000_000, "expected at most 1,000,000").optional(),
});

export const rolloutPatchSchema = rolloutOptionsSchema.extend({ paused: z.boolean().optional() });

/** Adds the rules one field cannot say: rising steps, and a schedule needs its interval. */
export function withSchedule<T extends z.ZodType<RolloutOptions>>(schema: T) {
  return schema.superRefine((o, ctx) => {
    if (!o.steps?.length) return;
    if (!o.steps.every((v, i) => i === 0 || v > (o.steps?.[i - 1] ?? 0))) {
      ctx.addIssue({ code: "custom", path: ["steps"], message: "expected rising percentages above 0, e.g. 10,50,100" });
    }
    if (o.stepSeconds === undefined) ctx.addIssue({ code: "custom", path: ["stepSeconds"], message: "a schedule needs the time between steps" });
  });
}

export const rolloutPatch = withSchedule(rolloutPatchSchema);

export type RolloutOptions = z.infer<typeof rolloutOptionsSchema>;
export type RolloutPatch = z.infer<typeof rolloutPatchSchema>;
