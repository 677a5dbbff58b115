// Where Basalt keeps what it downloads and builds once: mkosi, tools trees, package caches.
import { homedir } from "node:os";
import { join } from "node:path";

export function cacheDir(): string {
  if (process.env.BASALT_CACHE_DIR) return process.env.BASALT_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(xdg, "basalt");
}
