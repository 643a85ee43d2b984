// A Java parent for kpld in KPL mode, written the way the KPL's Java wrapper
// (Daemon.java) drives its native process: FIFOs made with `mkfifo`, the
// wrapper's command line with hex-encoded messages, the pipe it reads opened
// first, frames of a 4-byte big-endian length and a protobuf Message parsed
// with protobuf-java (which refuses a missing required field, as the KPL
// does). Built from Debian's packages only (javac, protoc, libprotobuf-java);
// tests/kpl_java.rs compiles and runs it against the Kinesis double.
//
// Usage: java KplHarness KPLD_EXE ENDPOINT WORK_DIR
// Prints `ok N SHARD SEQ` per record that landed (N: the number at the start
// of its data, unique over the run) and `check NAME` per check passed; exits
// 0 when every check passed, 1 (with the reason on stderr) otherwise.

import com.google.protobuf.ByteString;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import kpld.kpl_native.Kpl.Configuration;
import kpld.kpl_native.Kpl.Credentials;
import kpld.kpl_native.Kpl.Flush;
import kpld.kpl_native.Kpl.Message;
import kpld.kpl_native.Kpl.Metric;
import kpld.kpl_native.Kpl.MetricsRequest;
import kpld.kpl_native.Kpl.PutRecord;
import kpld.kpl_native.Kpl.PutRecordResult;
import kpld.kpl_native.Kpl.SetCredentials;

public final class KplHarness {
    static final long WAIT_S = 60;
    static final AtomicLong DATA_NUMBER = new AtomicLong(1);

    /** One native process and the wrapper's state for it. */
    static final class Child {
        Process process;
        FileChannel in;
        FileChannel out;
        final LinkedBlockingQueue<Message> answers = new LinkedBlockingQueue<>();
        /** Futures outstanding: message id -> data number. */
        final Map<Long, Long> outstanding = new ConcurrentHashMap<>();
        volatile boolean gone;
        long nextId = 1;
        File stderr;
    }

    static String hex(Message m) {
        StringBuilder s = new StringBuilder();
        for (byte b : m.toByteArray()) {
            s.append(String.format("%02X", b));
        }
        return s.toString();
    }

    static Message credentials(String akid, boolean forMetrics) {
        return Message.newBuilder()
                .setId(Long.MAX_VALUE)
                .setSetCredentials(SetCredentials.newBuilder()
                        .setForMetrics(forMetrics)
                        .setCredentials(Credentials.newBuilder()
                                .setAccessKeyId(akid)
                                .setSecretAccessKey("secret")))
                .build();
    }

    static Child start(String exe, String endpoint, File dir, int n) throws Exception {
        Child c = new Child();
        String tag = UUID.randomUUID().toString().substring(0, 8);
        File inPipe = new File(dir, "amz-aws-kpl-in-pipe-" + tag);
        File outPipe = new File(dir, "amz-aws-kpl-out-pipe-" + tag);
        Process mk = Runtime.getRuntime().exec(new String[] {
            "mkfifo", inPipe.getAbsolutePath(), outPipe.getAbsolutePath()});
        if (mk.waitFor() != 0) {
            throw new IllegalStateException("mkfifo failed");
        }
        // The defaults of KinesisProducerConfiguration, region set.
        Configuration cfg = Configuration.newBuilder()
                .setAggregationEnabled(true).setAggregationMaxCount(4294967295L)
                .setAggregationMaxSize(51200).setCloudwatchEndpoint("").setCloudwatchPort(443)
                .setCollectionMaxCount(500).setCollectionMaxSize(5242880).setConnectTimeout(6000)
                .setFailIfThrottled(false).setKinesisEndpoint("").setKinesisPort(443)
                .setLogLevel("info").setMaxConnections(24).setMetricsGranularity("shard")
                .setMetricsLevel("detailed").setMetricsNamespace("KinesisProducerLibrary")
                .setMetricsUploadDelay(60000).setMinConnections(1).setRateLimit(150)
                .setRecordMaxBufferedTime(100).setRecordTtl(30000).setRegion("us-east-1")
                .setRequestTimeout(6000).setVerifyCertificate(true).setProxyHost("")
                .setProxyPort(443).setProxyUserName("").setProxyPassword("").setThreadConfig(0)
                .build();
        List<String> args = new ArrayList<>(List.of(exe,
                "-o", outPipe.getAbsolutePath(), "-i", inPipe.getAbsolutePath(),
                "-c", hex(Message.newBuilder().setId(0).setConfiguration(cfg).build()),
                "-k", hex(credentials("AKIDJAVA", false)), "-t",
                "-w", hex(credentials("AKIDJAVA", true)), "-l", "info"));
        ProcessBuilder pb = new ProcessBuilder(args);
        pb.environment().put("LD_LIBRARY_PATH", dir.getAbsolutePath());
        pb.environment().put("CA_DIR", new File(dir, "cacerts").getAbsolutePath());
        pb.environment().put("KPLD_KINESIS_ENDPOINT", endpoint);
        pb.environment().put("KPLD_METRICS_CLOUDWATCH", "false");
        c.stderr = new File(dir, "kpld-" + n + ".stderr");
        pb.redirectError(c.stderr);
        pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
        c.process = pb.start();
        // As Daemon.connectToChild: the pipe it reads, then the one it writes.
        c.in = FileChannel.open(inPipe.toPath(), StandardOpenOption.READ);
        c.out = FileChannel.open(outPipe.toPath(), StandardOpenOption.WRITE);
        Thread reader = new Thread(() -> readLoop(c));
        reader.setDaemon(true);
        reader.start();
        return c;
    }

    static void readLoop(Child c) {
        ByteBuffer len = ByteBuffer.allocate(4);
        try {
            while (true) {
                len.clear();
                if (!readFully(c.in, len)) {
                    break;
                }
                len.flip();
                int n = len.getInt();
                if (n <= 0 || n > 12 * 1024 * 1024) {
                    throw new IllegalArgumentException("Invalid message size (" + n + " bytes)");
                }
                ByteBuffer body = ByteBuffer.allocate(n);
                if (!readFully(c.in, body)) {
                    throw new IOException("EOF reached during read");
                }
                body.flip();
                // parseFrom refuses a message missing a required field.
                c.answers.put(Message.parseFrom(ByteString.copyFrom(body)));
            }
        } catch (Exception e) {
            System.err.println("reader: " + e);
            c.answers.add(Message.newBuilder().setId(-1).build());
        }
        c.gone = true;
        c.answers.add(Message.newBuilder().setId(-2).build());
    }

    static boolean readFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            if (ch.read(b) < 0) {
                return false;
            }
        }
        return true;
    }

    static synchronized void send(Child c, Message m) throws IOException {
        ByteBuffer len = ByteBuffer.allocate(4).putInt(m.getSerializedSize());
        len.flip();
        while (len.hasRemaining()) {
            c.out.write(len);
        }
        m.writeTo(Channels.newOutputStream(c.out));
    }

    static long put(Child c, String key) throws IOException {
        long id = c.nextId++;
        long n = DATA_NUMBER.getAndIncrement();
        c.outstanding.put(id, n);
        send(c, Message.newBuilder().setId(id).setPutRecord(PutRecord.newBuilder()
                .setStreamName("s").setPartitionKey(key)
                .setData(ByteString.copyFrom(n + "|java", StandardCharsets.UTF_8))).build());
        return id;
    }

    static void flush(Child c) throws IOException {
        send(c, Message.newBuilder().setId(c.nextId++).setFlush(Flush.newBuilder()).build());
    }

    static Message next(Child c) throws Exception {
        Message m = c.answers.poll(WAIT_S, TimeUnit.SECONDS);
        if (m == null) {
            throw new IllegalStateException("no answer within " + WAIT_S + " s");
        }
        if (m.getId() == -1) {
            throw new IllegalStateException("the answer pipe broke (see reader:)");
        }
        return m;
    }

    /**
     * One result: true if it landed (printed), false if refused with
     * ShuttingDown; anything else fails the run.
     */
    static boolean handle(Child c, Message m) {
        if (!m.hasPutRecordResult()) {
            throw new IllegalStateException("not a result: " + m);
        }
        Long n = c.outstanding.remove(m.getSourceId());
        if (n == null) {
            throw new IllegalStateException("a result for unknown id " + m.getSourceId());
        }
        PutRecordResult r = m.getPutRecordResult();
        if (r.getSuccess() && r.hasShardId() && r.hasSequenceNumber()
                && r.getAttemptsCount() > 0) {
            System.out.println("ok " + n + " " + r.getShardId() + " " + r.getSequenceNumber());
            return true;
        }
        int last = r.getAttemptsCount() - 1;
        if (!r.getSuccess() && last >= 0
                && r.getAttempts(last).getErrorCode().equals("ShuttingDown")) {
            return false;
        }
        throw new IllegalStateException("record " + n + ": " + r);
    }

    /** Waits for the results of `count` records; each must have landed. */
    static void landed(Child c, int count) throws Exception {
        for (int got = 0; got < count; ) {
            Message m = next(c);
            if (m.getId() == -2) {
                throw new IllegalStateException("kpld exited with results missing");
            }
            if (!m.hasPutRecordResult()) {
                continue;
            }
            Long n = c.outstanding.remove(m.getSourceId());
            if (n == null) {
                throw new IllegalStateException("a result for unknown id " + m.getSourceId());
            }
            PutRecordResult r = m.getPutRecordResult();
            if (!r.getSuccess() || !r.hasShardId() || !r.hasSequenceNumber()
                    || r.getAttemptsCount() == 0) {
                throw new IllegalStateException("record " + n + " did not land: " + r);
            }
            System.out.println("ok " + n + " " + r.getShardId() + " " + r.getSequenceNumber());
            got++;
        }
    }

    static void check(String name) {
        System.out.println("check " + name);
    }

    public static void main(String[] argv) throws Exception {
        String exe = argv[0];
        String endpoint = argv[1];
        File dir = new File(argv[2]);
        try {
            run(exe, endpoint, dir);
        } catch (Exception e) {
            System.err.println("harness failed: " + e);
            File[] logs = dir.listFiles((d, name) -> name.endsWith(".stderr"));
            for (File f : logs == null ? new File[0] : logs) {
                System.err.println("--- " + f.getName());
                System.err.println(new String(java.nio.file.Files.readAllBytes(f.toPath()),
                        StandardCharsets.UTF_8));
            }
            System.exit(1);
        }
        System.exit(0);
    }

    static void run(String exe, String endpoint, File dir) throws Exception {
        // 1. Results, flush, metrics, a credentials refresh.
        Child c = start(exe, endpoint, dir, 1);
        for (int i = 0; i < 100; i++) {
            put(c, "key-" + i);
        }
        flush(c);
        landed(c, 100);
        check("results");
        send(c, credentials("AKIDJAVAROTATED", false));
        send(c, credentials("AKIDJAVAROTATED", true));
        for (int i = 0; i < 10; i++) {
            put(c, "rotated-" + i);
        }
        flush(c);
        landed(c, 10);
        check("credentials");
        double putSum = 0;
        for (int tries = 0; tries < 240 && putSum < 110; tries++) {
            long id = c.nextId++;
            send(c, Message.newBuilder().setId(id)
                    .setMetricsRequest(MetricsRequest.newBuilder()).build());
            Message m = next(c);
            if (!m.hasMetricsResponse() || m.getSourceId() != id) {
                throw new IllegalStateException("not the metrics answer: " + m);
            }
            putSum = 0;
            for (Metric x : m.getMetricsResponse().getMetricsList()) {
                if (x.getName().equals("UserRecordsPut") && x.getDimensionsCount() == 1
                        && x.getDimensions(0).getValue().equals("s")) {
                    putSum = x.getStats().getSum();
                }
            }
            if (putSum < 110) {
                Thread.sleep(250);
            }
        }
        if (putSum != 110) {
            throw new IllegalStateException("UserRecordsPut for s: " + putSum + ", want 110");
        }
        check("metrics");
        // The JVM's end as kpld sees it: end of input.
        c.out.close();
        if (!c.process.waitFor(WAIT_S, TimeUnit.SECONDS) || c.process.exitValue() != 0) {
            throw new IllegalStateException("kpld after end of input: " + c.process);
        }
        check("end-of-input");

        // 2. destroy() (SIGTERM) with records in flight: every record gets
        // its result; those kpld had read land, those still in the pipe are
        // refused with ShuttingDown.
        c = start(exe, endpoint, dir, 2);
        for (int i = 0; i < 300; i++) {
            put(c, "term-" + i);
        }
        Message first = next(c);
        handle(c, first);
        c.process.destroy();
        int refused = 0;
        for (int got = 1; got < 300; ) {
            Message m = next(c);
            if (m.getId() == -2) {
                throw new IllegalStateException("kpld exited with results missing");
            }
            if (m.hasPutRecordResult()) {
                refused += handle(c, m) ? 0 : 1;
                got++;
            }
        }
        System.err.println("sigterm: " + refused + " of 300 refused with ShuttingDown");
        if (!c.process.waitFor(WAIT_S, TimeUnit.SECONDS) || c.process.exitValue() != 0) {
            throw new IllegalStateException("kpld after SIGTERM: exit " + c.process.exitValue());
        }
        check("sigterm");

        // 3. kpld killed under load: as the wrapper, fail every future still
        // outstanding when the child is gone, then start a new child.
        Child k = start(exe, endpoint, dir, 3);
        for (int i = 0; i < 2000 && !k.gone; i++) {
            try {
                put(k, "kill-" + i);
            } catch (IOException e) {
                // EPIPE: the child is gone (the wrapper's writer fails here too).
                break;
            }
            if (i == 1000) {
                k.process.destroyForcibly();
            }
        }
        k.process.waitFor(WAIT_S, TimeUnit.SECONDS);
        int answered = 0;
        while (true) {
            Message m = next(k);
            if (m.getId() == -2) {
                break;
            }
            if (m.hasPutRecordResult() && k.outstanding.remove(m.getSourceId()) != null) {
                answered++;
            }
        }
        int failedByExit = k.outstanding.size();
        k.outstanding.clear();
        if (failedByExit == 0) {
            throw new IllegalStateException("kill -9 left no record outstanding; nothing tested");
        }
        System.err.println("killed: " + answered + " answered, " + failedByExit
                + " failed by the exit");
        Child again = start(exe, endpoint, dir, 4);
        for (int i = 0; i < 10; i++) {
            put(again, "after-" + i);
        }
        flush(again);
        landed(again, 10);
        again.out.close();
        again.process.waitFor(WAIT_S, TimeUnit.SECONDS);
        check("restart-after-kill");
    }
}
