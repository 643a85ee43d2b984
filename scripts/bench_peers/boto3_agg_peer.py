"""boto3 `put_records` with aws-kinesis-agg aggregation, sending kpld-bench's
workload the way a hand-rolled producer does: one aggregator (51,200-byte
aggregates, like the KPL's default), PutRecords calls of up to 500 entries or
5 MiB, failed entries sent again until they succeed."""

import boto3
from botocore.config import Config
from aws_kinesis_agg.aggregator import RecordAggregator

from common import Meter, parse_args, workload

MAX_ENTRIES = 500
MAX_BYTES = 5 * 1024 * 1024


def main():
    args = parse_args(__doc__)
    keys, data = workload(args)
    client = boto3.client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=args.endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    calls = 0
    retried = 0
    succeeded = 0

    def send(entries):
        # entries: [(request entry, user records in it)]
        nonlocal calls, retried, succeeded
        while entries:
            calls += 1
            resp = client.put_records(StreamName=args.stream, Records=[e for e, _ in entries])
            again = []
            for (entry, n), r in zip(entries, resp["Records"]):
                if "ErrorCode" in r:
                    again.append((entry, n))
                else:
                    succeeded += n
            retried += len(again)
            entries = again

    def entry_of(agg):
        pk, ehk, blob = agg.get_contents()
        e = {"Data": blob, "PartitionKey": pk}
        if ehk:
            e["ExplicitHashKey"] = ehk
        return e, agg.get_num_user_records()

    nkeys = len(keys)
    with Meter() as m:
        agg = RecordAggregator(max_size=51_200)
        batch, batch_bytes = [], 0
        for i in range(args.records):
            full = agg.add_user_record(keys[i % nkeys], data)
            if full is None:
                continue
            e = entry_of(full)
            size = len(e[0]["Data"]) + len(e[0]["PartitionKey"])
            if len(batch) == MAX_ENTRIES or batch_bytes + size > MAX_BYTES:
                send(batch)
                batch, batch_bytes = [], 0
            batch.append(e)
            batch_bytes += size
        last = agg.clear_and_get()
        if last is not None:
            batch.append(entry_of(last))
        if batch:
            send(batch)
    m.report(
        "boto3 put_records + aws-kinesis-agg 1.2.3",
        args,
        args.records,
        succeeded,
        extra=[f"put_records_calls: {calls}", f"entries_retried: {retried}"],
    )


if __name__ == "__main__":
    main()
