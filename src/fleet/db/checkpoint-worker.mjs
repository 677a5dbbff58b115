// Worker thread of the SQLite fleet database (sql.ts): runs its WAL checkpoints on a connection of
// its own, so that their fsyncs (milliseconds to tens of milliseconds each) do not stop the server's
// event loop. Plain JavaScript so that it loads as is, with or without tsx.
//
// workerData: { path, intervalMs }. Every intervalMs it copies what the write-ahead log holds into
// the database file (PRAGMA wal_checkpoint(PASSIVE): it waits for no one, and no writer waits for
// it); the message "close" runs a last one, closes the connection and ends the thread.
// A failure is posted as { error } and ends the thread: the main connection then checkpoints again.
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

const db = new Database(workerData.path, { fileMustExist: true });
// NORMAL, as on the main connection: a checkpoint syncs the log before and the database after.
db.pragma("synchronous = NORMAL");

function checkpoint() {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch (e) {
    clearInterval(timer);
    parentPort.postMessage({ error: e instanceof Error ? e.message : String(e) });
    db.close();
    parentPort.close();
  }
}

const timer = setInterval(checkpoint, workerData.intervalMs);

parentPort.on("message", (message) => {
  if (message !== "close") return;
  clearInterval(timer);
  checkpoint();
  if (db.open) db.close();
  parentPort.close();
});
