{
  "targets": [
    {
      "target_name": "bucketmount_fuse",
      "sources": [
        "src/session.c",
        "src/requests.c",
        "src/replies.c",
        "src/reply_thread.c",
        "src/messages.c",
        "src/descriptor.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["<!@(pkg-config --cflags fuse3)", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["<!@(pkg-config --libs fuse3)", "-lm"]
    }
  ]
}
