// Typed errors: library code throws these, only the CLI decides how to print them.
import type { z } from "zod";
import { firstIssue } from "./contract/ids.js";

/** A problem the user can fix: bad input, a missing file, a refused operation. Printed without a stack. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "UserError";
  }
}

/** What the user asked for does not exist (a release, a device, a rollout): HTTP 404. */
export class NotFoundError extends UserError {
  constructor(message: string, hint?: string) {
    super(message, hint);
    this.name = "NotFoundError";
  }
}

/** The request contradicts what exists (an immutable release, a name taken, a change raced by another): HTTP 409. */
export class ConflictError extends UserError {
  constructor(message: string, hint?: string) {
    super(message, hint);
    this.name = "ConflictError";
  }
}

/** A request without the right to what it asks: no or wrong credentials (401), not allowed this way (403), too many (429). */
export class AccessDenied extends UserError {
  constructor(
    readonly status: 401 | 403 | 429,
    message: string,
    hint?: string,
  ) {
    super(message, hint);
    this.name = "AccessDenied";
  }
}

/** The exit code of a command that ended with `e`; the CLI maps errors here and nowhere else. */
export function exitCode(e: unknown): number {
  if (e instanceof DefinitionError) return 2;
  if (e instanceof NotFoundError) return 3;
  if (e instanceof ConflictError) return 4;
  if (e instanceof AccessDenied) return 5;
  if (e instanceof UserError) return 1;
  // EX_SOFTWARE: a bug in Basalt.
  return 70;
}

/** The error an HTTP refusal stands for, the inverse of httpStatus: what a client of the server throws. */
export function errorFromStatus(status: number, message: string): UserError {
  if (status === 404) return new NotFoundError(message);
  if (status === 409) return new ConflictError(message);
  if (status === 401 || status === 403 || status === 429) return new AccessDenied(status, message);
  return new UserError(message);
}

/** The HTTP status a user error stands for; the server maps errors here and nowhere else. */
export function httpStatus(e: UserError): 400 | 401 | 403 | 404 | 409 | 429 {
  if (e instanceof NotFoundError) return 404;
  if (e instanceof ConflictError) return 409;
  if (e instanceof AccessDenied) return e.status;
  return 400;
}

/** One finding in a definition file, located as `file:line key`. */
export interface Problem {
  file: string;
  line?: number;
  key: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  return p.key ? `${where} ${p.key}: ${p.message}` : `${where}: ${p.message}`;
}

/** All problems of a definition, reported together. */
export class DefinitionError extends UserError {
  constructor(readonly problems: Problem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "DefinitionError";
  }
}

/** An external tool failed. Carries what is needed to tell the user where to look. */
export class ToolError extends UserError {
  constructor(
    readonly command: string[],
    readonly result: { code: number | null; signal: NodeJS.Signals | null; notFound: boolean },
    readonly logPath?: string,
    readonly tail?: string,
  ) {
    const name = command[0] ?? "?";
    const how = result.notFound
      ? `${name}: command not found`
      : result.signal
        ? `${name} was killed by ${result.signal}`
        : `${name} exited with code ${result.code}`;
    super(how, logPath ? `full log: ${logPath}` : undefined);
    this.name = "ToolError";
  }
}

/**
 * `value` as `schema` reads it, or a UserError naming `what` (and the value, when it is a name or a
 * number) and the first problem. `fields` names an object's fields as the user gave them (command-line
 * flags): a problem with one is then `--flag: message`.
 */
export function parseInput<T extends z.ZodType>(schema: T, value: unknown, what: string, fields?: Readonly<Record<string, string>>): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.length ? fields?.[String(issue.path[0])] : undefined;
  if (issue && field) throw new UserError(`${field}: ${issue.message}`);
  // A bad name or number is shown as given: the operator sees what was refused.
  if (typeof value === "string" || typeof value === "number") throw new UserError(`${what} ${JSON.stringify(value).slice(0, 120)}: ${firstIssue(r.error)}`);
  throw new UserError(firstIssue(r.error, what));
}
