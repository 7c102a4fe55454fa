/**
 * Told about records as they are written: each issued-token record once it is committed, each decision
 * event as it is recorded. Metrics listen here; storage knows nothing about them.
 */
export interface RecordObserver {
  tokenRecorded(type: string): void;
  decisionRecorded(event: { decision: string; action: string; reason?: string | null }): void;
}

export const ignoreRecords: RecordObserver = {
  tokenRecorded() {},
  decisionRecorded() {},
};
