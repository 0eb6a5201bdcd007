"""Calls through entra-proxy with the official OpenAI Python SDK, both client styles.

    pip install openai
    PROXY=http://127.0.0.1:8080 KEY=ep-... python3 examples/openai_sdk.py
"""
import os

from openai import AzureOpenAI, OpenAI

proxy = os.environ.get("PROXY", "http://127.0.0.1:8080")
key = os.environ["KEY"]
messages = [{"role": "user", "content": "Say hello"}]

# Azure SDK style: the proxy stands where https://<resource>.openai.azure.com would be.
azure = AzureOpenAI(azure_endpoint=proxy, api_key=key, api_version="2024-10-21")
print("AzureOpenAI:", azure.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content)

# OpenAI style: /v1 paths, `model` mapped to a deployment by [[models]].
openai = OpenAI(base_url=f"{proxy}/v1", api_key=key)
print("OpenAI:", openai.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content)

# Streaming arrives event by event.
for chunk in openai.chat.completions.create(model="gpt-4o", messages=messages, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
