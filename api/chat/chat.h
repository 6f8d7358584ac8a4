/*
 * chat.h — the chat domain, for the resources: membership and locks
 * (membership.h, with the lock order), inbox fan-out (inbox.h), message rows
 * and JSON (message.h), and the SQL fragments the worker shares (chat_sql.h).
 */
#ifndef NATTER_CHAT_H
#define NATTER_CHAT_H

#include "chat_sql.h"
#include "inbox.h"
#include "membership.h"
#include "message.h"

#endif
