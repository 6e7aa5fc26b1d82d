//! What `--help` prints: the server's usage and each command's own.

/// `iot-ws-server --help`: the server's options and the list of commands.
pub const SERVER: &str = "\
iot-ws-server: WebSocket actuation server for IoT devices (subprotocol echo-protocol)

USAGE:
    iot-ws-server [OPTIONS]                 serve
    iot-ws-server --check [OPTIONS]         check the configuration (key, TLS pair, database URL
                                            syntax; no connection), print \"configuration ok\"
    iot-ws-server --demo                    serve with a throw-away key and print a demo token
    iot-ws-server keygen [--dir DIR]        write DIR/private.pem and DIR/public.pem
    iot-ws-server token --private-key PATH --device-id ID [--ttl SECS]
    iot-ws-server checktoken [--public-key PATH] [--device-id ID] TOKEN
    iot-ws-server device --url ws://HOST:PORT/ --device-id ID --token-file F
    iot-ws-server actuate --url ws://HOST:PORT/ --device-id ID --content JSON
    iot-ws-server version | --version | -V
    iot-ws-server COMMAND --help            that command's options

Any invalid setting is one line on stderr and exit status 2, naming the flag or variable.

OPTIONS (flag / environment; Cloud Foundry's PORT, VCAP_SERVICES, VCAP_APPLICATION are read too):
    --listen ADDR                 IOT_WS_LISTEN             default 0.0.0.0:5000 (0.0.0.0:$PORT with PORT)
    --metrics-listen ADDR         IOT_WS_METRICS_LISTEN     serve /metrics there (plain HTTP), not on --listen
    --public-key PATH             IOT_WS_PUBLIC_KEY         default keys/public.pem; a directory: each *.pem
    --database-url URL            DATABASE_URL              else VCAP mypostgres, else in memory
                                  TLS: sslmode=disable|prefer|require|verify-ca|verify-full, sslrootcert=PATH
    --database-url-file F         DATABASE_URL_FILE         the URL read from F (not in `ps`)
    --actuator-username U         IOT_WS_ACTUATOR_USERNAME  else VCAP websocket-ups, else refuse actuations
    --actuator-password P         IOT_WS_ACTUATOR_PASSWORD
    --actuator-password-file F    IOT_WS_ACTUATOR_PASSWORD_FILE  the password read from F (not in `ps`), again on SIGHUP
    --external-address HOST:PORT  IOT_WS_EXTERNAL_ADDRESS   stored as `server` in the bindings
    --max-message-bytes N         IOT_WS_MAX_MESSAGE_BYTES  default 65536
    --register-timeout-secs N     IOT_WS_REGISTER_TIMEOUT_SECS default 10
    --hold-actuations-secs N      IOT_WS_HOLD_ACTUATIONS_SECS default 30 (0 disables)
    --max-connections N           IOT_WS_MAX_CONNECTIONS    default: the soft open-file limit - 64
    --max-pending N               IOT_WS_MAX_PENDING        default 1024
    --max-pending-per-address N   IOT_WS_MAX_PENDING_PER_ADDRESS default 512
    --send-queue-bytes N          IOT_WS_SEND_QUEUE_BYTES   default 1048576 (1 MiB)
    --hold-max-bytes N            IOT_WS_HOLD_MAX_BYTES     default 16777216 (16 MiB)
    --tls-cert PATH               IOT_WS_TLS_CERT           PEM chain, leaf first: the port is wss:// only
    --tls-key PATH                IOT_WS_TLS_KEY            its PEM private key; both reloaded on SIGHUP
    --instance-lock-wait SECS     IOT_WS_INSTANCE_LOCK_WAIT default 90
    --log LEVELS                  IOT_WS_LOG                default info; e.g. warn,tokio_postgres=debug
                                  levels: off error warn info debug trace; errors and warnings on
                                  stderr, the rest on stdout
    --log-format text|json        IOT_WS_LOG_FORMAT         default text; json: one object per line
    --check                       validate all of the above and exit 0, or 2 with the error
    --help, -h                    this text
    --version, -V                 iot-ws-server VERSION
";

/// `iot-ws-server keygen --help`.
pub const KEYGEN: &str = "\
iot-ws-server keygen [--dir DIR]
    Writes a new RSA-2048 pair: DIR/private.pem (mode 0600, never overwritten) and
    DIR/public.pem, the server's --public-key. DIR defaults to keys.
";

/// `iot-ws-server token --help`.
pub const TOKEN: &str = "\
iot-ws-server token --private-key PATH --device-id ID [--ttl SECS]
    Prints a device token for ID: RS256 signed with PATH (PEM), `sub` ID, `exp` SECS from now
    (default 31536000, one year).
";

/// `iot-ws-server checktoken --help`.
pub const CHECKTOKEN: &str = "\
iot-ws-server checktoken [--public-key PATH] [--device-id ID] TOKEN
    Checks a device token offline, as the server would: RS256 signature with PATH (else
    IOT_WS_PUBLIC_KEY, else keys/public.pem), then `sub` (ID; without --device-id, the token's
    own `sub`), `exp` and `nbf` against this machine's clock (60 s leeway). TOKEN - reads it from
    stdin. Prints the claims (JSON, one line; signature checked or not) and the verdict.
    Exit status: 0 valid, 1 rejected (the reason on the verdict line), 2 bad usage or key.
";

/// `iot-ws-server device --help`.
pub const DEVICE: &str = "\
iot-ws-server device --url ws://HOST:PORT/ --device-id ID (--token T | --token-file F)
                     [--exec CMD] [--ca PATH]
    Is a device: registers, pings, reconnects with back-off; prints each actuation on stdout
    as one JSON line (or writes it to CMD's stdin), status on stderr. The token also from
    IOT_WS_DEVICE_TOKEN. wss:// checks the server's certificate against the system's CAs, or
    only those in --ca PATH (PEM).
    Exit status: 0 on SIGINT/SIGTERM, 1 when the token is refused, 2 bad usage.
";

/// `iot-ws-server actuate --help`.
pub const ACTUATE: &str = "\
iot-ws-server actuate --url ws://HOST:PORT/ --device-id ID (--content JSON | --body JSON)
                      --username U (--password P | --password-file F) [--timeout-secs 10]
                      [--ca PATH]
    Sends one actuation with \"ack\": true, as the dashboard does, and prints the ack. The
    credentials also from IOT_WS_ACTUATOR_USERNAME and IOT_WS_ACTUATOR_PASSWORD. wss:// as for
    device.
    Exit status: 0 delivered, held or forwarded; 1 not connected, refused or no ack; 2 bad usage.
";
